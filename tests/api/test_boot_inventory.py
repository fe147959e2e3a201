"""Inventory from the boot: what iPXE reports is stored and shown, never run or rendered raw,
and a workflow that does not fit the machine is not served (the script and an event say why)."""

import dbcheck

MAC = "52:54:00:12:34:56"
FACTS = {
    "uuid": "4c4c4544-0042-3010-8052-b4c04f423332",
    "serial": "ABC 123",
    "vendor": "Dell Inc.",
    "model": "PowerEdge R650",
    "arch": "x86_64",
    "platform": "efi",
    "asset": "DC1-R42-U07",
}


def boot(client, **params):
    answer = client.get("/api/v1/boot", query_string={"mac": MAC, **params})
    return answer.status_code, answer.get_data(as_text=True)


def test_the_facts_are_stored_and_shown(client):
    assert boot(client, **FACTS)[0] == 200
    node = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert node["vendor"] == "Dell Inc." and node["model"] == "PowerEdge R650"
    assert node["serial_number"] == "ABC 123"
    assert node["arch"] == "x86_64" and node["boot_mode"] == "uefi"
    assert node["asset_tag"] == "DC1-R42-U07"


def test_every_new_parameter_is_optional(client):
    assert boot(client)[0] == 200


def test_a_changed_asset_tag_is_recorded(client, clock):
    boot(client, asset="A1")
    boot(client, asset="A2")
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["asset_tag"] == "A2"


HOSTILE = "x${net0/mac}||shell\n<script>alert(1)</script>"


def test_hostile_values_are_stored_as_text_and_escaped_on_the_dashboard(app, client):
    status, _ = boot(client, vendor=HOSTILE, asset=HOSTILE)
    assert status == 200
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["asset_tag"] == HOSTILE
    page = client.get(f"/nodes/{MAC}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_overlong_value_is_refused_as_a_script(app, client):
    status, script = boot(client, asset="a" * 256)
    assert status == 400
    assert script.splitlines()[1].startswith("echo provisioner: bad boot request: asset:")
    assert dbcheck.count_rows(app.config["SQLALCHEMY_DATABASE_URI"], "nodes") == 0


def pending(client, workflow_id="test-os"):
    node = client.post("/api/v1/nodes", json={"mac_address": MAC}).json["data"]
    client.patch(f"/api/v1/nodes/{MAC}", json={"workflow_id": workflow_id})
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "pending"})
    return node


def test_a_workflow_for_another_architecture_is_not_served(client):
    node = pending(client)
    status, script = boot(client, arch="arm64", platform="efi")
    assert status == 200
    assert "kernel" not in script
    assert "the workflow is for x86_64 but the machine's iPXE is arm64" in script
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "pending"
    events = client.get(f"/api/v1/nodes/{node['id']}/events").json["data"]
    assert events[0]["event_type"] == "boot_refused"
    assert events[0]["status"] == "failed"
    assert "not served" in events[0]["message"]


def test_a_bios_machine_gets_no_uefi_workflow_and_an_event(client, workflows_dir):
    (workflows_dir / "efi-os.yaml").write_text(
        "id: efi-os\nname: EFI\nboot_mode: uefi\nkernel_path: http://m/k\ninitrd_path: http://m/i\n"
    )
    node = pending(client, "efi-os")
    status, script = boot(client, platform="pcbios")
    assert "needs UEFI firmware" in script
    events = client.get(f"/api/v1/nodes/{node['id']}/events").json["data"]
    assert [e["event_type"] for e in events] == ["boot_refused"]


def test_a_bios_ipxe_on_a_64_bit_machine_still_installs(client):
    """undionly.kpxe reports i386 even on x86_64 CPUs: not a reason to refuse."""
    pending(client)
    status, script = boot(client, arch="i386", platform="pcbios")
    assert "kernel http://prov.test:8080/files/vmlinuz" in script


def test_a_hostile_architecture_is_inert_in_the_refusal(client):
    pending(client)
    _, script = boot(client, arch="a${x}||sh")
    echo = next(line for line in script.splitlines() if "stays pending" in line)
    assert "${" not in echo and "||" not in echo
