"""``provisioner power`` and the CSV import's power columns."""

import json

from powerhelpers import ipmi_bmc

from provisioner.extensions import db
from provisioner.models import NodePower

PASSWORD = "Cli-S3cret-pw"


def add_node(runner, mac: str = "52:54:00:dd:00:01") -> str:
    result = runner.invoke(args=["nodes", "add", mac])
    assert result.exit_code == 0, result.output
    return mac


def test_set_reads_the_password_from_the_environment_and_show_hides_it(app, runner):
    mac = add_node(runner)
    result = runner.invoke(
        args=["power", mac, "set", "--driver", "ipmi", "--address", "10.1.1.1", "--username", "u"],
        env={"PROVISIONER_BMC_PASSWORD": PASSWORD},
    )
    assert result.exit_code == 0, result.output
    shown = runner.invoke(args=["power", mac, "show"])
    assert "password_set: True" in shown.output
    assert PASSWORD not in shown.output + result.output


def test_set_refuses_a_bad_address_naming_it(runner):
    mac = add_node(runner)
    result = runner.invoke(args=["power", mac, "set", "--driver", "wol", "--address", "nope"])
    assert result.exit_code != 0
    assert "address" in result.output


def test_power_on_waits_for_the_bmc_and_prints_the_outcome(runner, tmp_path):
    mac = add_node(runner)
    with ipmi_bmc(tmp_path) as bmc:
        runner.invoke(
            args=["power", mac, "set", "--driver", "ipmi", "--address", bmc["address"]]
            + ["--username", bmc["user"]],
            env={"PROVISIONER_BMC_PASSWORD": bmc["password"]},
        )
        result = runner.invoke(args=["power", mac, "on"])
        assert result.exit_code == 0, result.output
        assert "power on done: machine is on" in result.output
        assert bmc["log"].read_text().splitlines()[-1] == "power on"


def test_bulk_by_tag_reports_each_failure_and_exits_1(build_app):
    # Nothing answers on 127.0.0.1:1: a 1 s action timeout ends each attempt (ipmitool's
    # own retries would take ~10 s).
    app = build_app(POWER_TIMEOUT_SECONDS=1)
    runner, client = app.test_cli_runner(), app.test_client()
    for index in range(3):
        mac = f"52:54:00:dd:01:0{index}"
        node = client.post("/api/v1/nodes", json={"mac_address": mac, "tags": ["rack9"]}).json
        if index < 2:
            client.patch(
                f"/api/v1/nodes/{node['data']['id']}",
                json={"power": {"driver": "ipmi", "address": "127.0.0.1:1", "password": "x"}},
            )
    result = runner.invoke(args=["power", "--tag", "rack9", "status"])
    assert result.exit_code == 1
    assert result.output.count("power status failed") == 2
    assert "skipped" in result.output  # the manual node


def test_csv_import_takes_power_columns_and_encrypts_the_password(app, runner, tmp_path):
    csv = tmp_path / "rack.csv"
    csv.write_text(
        "mac_address,power_driver,power_address,power_username,power_password\n"
        f"52:54:00:ee:00:01,redfish,https://10.0.0.5/redfish/v1/Systems/1,admin,{PASSWORD}\n"
        "52:54:00:ee:00:02,ipmi,,admin,x\n"
    )
    result = runner.invoke(args=["nodes", "import", str(csv)])
    assert result.exit_code == 1
    assert "line 3: power: address" in result.output
    with app.app_context():
        rows = db.session.query(NodePower).all()
        assert [(row.driver, row.username) for row in rows] == [("redfish", "admin")]
        assert PASSWORD not in json.dumps(rows[0].password_encrypted)
