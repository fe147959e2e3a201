"""Rendered install configs: ``GET /api/v1/nodes/<ref>/config/<name>`` and the seed URL.

A workflow's ``templates:`` name Jinja2 files in the workflows directory. They are rendered
per node in a sandbox with ``StrictUndefined``: only the node's variables are visible, a
misspelt one is an error, attribute tricks and files outside the directory are refused. In
token mode a config needs the node's current report token, and a wrong token looks the same
for a known and an unknown node. The shipped examples (kickstart, autoinstall, preseed) are
fetched here the way their installers fetch them, from the URL on the kernel command line.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from paths import EXAMPLE_WORKFLOWS
from prometheus_client import REGISTRY
from templatecases import ESCAPING_PATHS
from templatecases import HOSTILE_TEMPLATES
from templatecases import SECRET
from workflowfiles import write_test_workflow

from provisioner import create_app
from provisioner.extensions import db
from provisioner.serve import upgrade_database

SERVER = "http://prov.test:8080"
MAC = "52:54:00:c0:00:01"
OTHER_MAC = "52:54:00:c0:00:02"
UNKNOWN_MAC = "52:54:00:c0:00:99"
WORKFLOW = "cfg-os"
WRONG_TOKEN = "not-the-report-token-0123456789abcdefghijklmno"

ALL_VARIABLES = """\
server={{ server }}
node_id={{ node_id }}
mac={{ mac }}
ip={{ ip }}
hostname={{ hostname }}
report_url={{ report_url }}
report_token={{ report_token }}
workflow_id={{ workflow_id }}
workflow_name={{ workflow_name }}
"""


@pytest.fixture
def workflows_dir(workflows_dir: Path) -> Path:
    """The shared directory plus ``cfg-os``, whose configs include hostile ones.

    A secret file sits beside the workflows directory, where no template may reach.
    """
    (workflows_dir.parent / "secret.txt").write_text(SECRET)
    templates_dir = workflows_dir / WORKFLOW
    templates_dir.mkdir()
    (templates_dir / "all.txt.j2").write_text(ALL_VARIABLES)
    (templates_dir / "misspelt.j2").write_text("host={{ hostnme }}\n")
    (templates_dir / "partial.j2").write_text("mac={{ mac }}\n")
    (templates_dir / "include-sibling.j2").write_text(
        f"{{% include '{WORKFLOW}/partial.j2' %}}node={{{{ node_id }}}}\n"
    )
    (templates_dir / "link.j2").symlink_to(workflows_dir.parent / "secret.txt")
    templates = {
        "all.txt": f"{WORKFLOW}/all.txt.j2",
        "misspelt": f"{WORKFLOW}/misspelt.j2",
        "include-sibling": f"{WORKFLOW}/include-sibling.j2",
        "symlink-out": f"{WORKFLOW}/link.j2",
    }
    for name, source in HOSTILE_TEMPLATES.items():
        (templates_dir / f"{name}.j2").write_text(source)
        templates[name] = f"{WORKFLOW}/{name}.j2"
    templates |= ESCAPING_PATHS
    write_test_workflow(
        workflows_dir,
        WORKFLOW,
        name="Config OS",
        kernel_path="${server}/files/vmlinuz",
        initrd_path="${server}/files/initrd.img",
        cmdline="cfg=${server}/api/v1/nodes/${node_id}/config/all.txt?token=${report_token}"
        " report_token=${report_token}",
        templates=templates,
    )
    return workflows_dir


@pytest.fixture
def report_auth() -> str:
    """``REPORT_AUTH`` for the app; token-mode tests parametrize it."""
    return "open"


@pytest.fixture
def app_config(app_config: dict, report_auth: str) -> dict:
    return app_config | {"REPORT_AUTH": report_auth}


def register(client, mac: str = MAC, workflow: str | None = WORKFLOW, **fields) -> dict:
    """A node with ``workflow``, pending: its next boot gets the installer."""
    body = {"mac_address": mac, "workflow_id": workflow, **fields}
    response = client.post("/api/v1/nodes", json=body)
    assert response.status_code == 201, response.json
    if workflow is None:
        return response.json["data"]
    response = client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})
    assert response.status_code == 200, response.json
    return response.json["data"]


def boot(client, mac: str = MAC, ip: str = "192.0.2.50") -> str:
    """Boot the machine as iPXE would; the script it gets."""
    response = client.get(
        "/api/v1/boot", query_string={"mac": mac}, environ_base={"REMOTE_ADDR": ip}
    )
    assert response.status_code == 200
    return response.get_data(as_text=True)


def kernel_args(script: str) -> list[str]:
    """The kernel command line of an install script, as a list of arguments."""
    line = next(line for line in script.splitlines() if line.startswith("kernel "))
    return line.removesuffix(" || goto failed").split()[2:]


def boot_installer(client, mac: str = MAC) -> str:
    """Serve a pending machine its installer; the report token it was given."""
    args = kernel_args(boot(client, mac))
    return next(arg.split("=", 1)[1] for arg in args if arg.startswith("report_token="))


def config(client, ref: str, name: str, token: str | None = None, how: str = "query"):
    """GET one config of a node, presenting ``token`` the way ``how`` says."""
    if how == "seed":
        return client.get(f"/api/v1/nodes/{ref}/seed/{token}/{name}")
    url = f"/api/v1/nodes/{ref}/config/{name}"
    if token is None:
        return client.get(url)
    if how == "header":
        return client.get(url, headers={"X-Report-Token": token})
    if how == "bearer":
        return client.get(url, headers={"Authorization": f"Bearer {token}"})
    return client.get(url, query_string={"token": token})


def rendered(response) -> dict[str, str]:
    """The ``key=value`` lines of a rendered ``all.txt``."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return dict(line.split("=", 1) for line in response.get_data(as_text=True).splitlines())


def rejected(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("provisioner_report_rejected_total", labels) or 0.0


# -- rendering per node ----------------------------------------------------------------------


def test_config_is_rendered_for_each_node_with_its_variables(client):
    """Every variable of the core issue plus workflow id and name, per node."""
    first = register(client, hostname="web-1")
    second = register(client, OTHER_MAC, hostname="web-2")
    boot(client, MAC, ip="192.0.2.51")
    boot(client, OTHER_MAC, ip="192.0.2.52")

    one = rendered(config(client, MAC, "all.txt"))
    two = rendered(config(client, second["id"], "all.txt"))

    assert one == {
        "server": SERVER,
        "node_id": first["id"],
        "mac": MAC,
        "ip": "192.0.2.51",
        "hostname": "web-1",
        "report_url": f"{SERVER}/api/v1/report",
        "report_token": "",
        "workflow_id": WORKFLOW,
        "workflow_name": "Config OS",
    }
    assert (two["node_id"], two["mac"], two["ip"], two["hostname"]) == (
        second["id"],
        OTHER_MAC,
        "192.0.2.52",
        "web-2",
    )


def test_node_is_found_by_id_or_by_mac_in_any_form(client):
    node = register(client)

    by_id = rendered(config(client, node["id"], "all.txt"))
    by_mac = rendered(config(client, MAC.upper().replace(":", "-"), "all.txt"))

    assert by_id == by_mac


def test_a_template_may_include_another_from_the_workflows_directory(client):
    node = register(client)

    response = config(client, MAC, "include-sibling")

    assert response.status_code == 200, response.json
    assert response.get_data(as_text=True) == f"mac={MAC}\nnode={node['id']}\n"


def test_a_node_without_hostname_gets_one_from_its_mac(client):
    """The variables are always defined; a node without a hostname gets ``node-<MAC>``."""
    register(client)

    assert rendered(config(client, MAC, "all.txt"))["hostname"] == "node-525400c00001"


# -- StrictUndefined and the sandbox ---------------------------------------------------------


def test_unknown_variable_is_an_error_never_an_empty_string(client):
    register(client)

    response = config(client, MAC, "misspelt")

    assert response.status_code == 500
    assert response.is_json
    assert "hostnme" in response.json["message"]
    assert "is undefined" in response.json["message"]


#: One of each way out (Python internals, Flask's globals, an include, a path in the workflow
#: file) through the endpoint; every case is rendered without the app in
#: tests/unit/test_install_configs.py.
@pytest.mark.parametrize(
    "name", ["attr-subclasses", "flask-config", "include-parent", "path-absolute"]
)
def test_sandbox_refuses_attribute_and_file_access(client, name):
    """Python internals, Flask's globals and files outside the directory stay out of reach."""
    register(client)

    response = config(client, MAC, name)

    assert response.status_code == 500, response.get_data(as_text=True)
    assert response.is_json
    assert f"Install config {name} cannot be rendered" in response.json["message"]
    body = response.get_data(as_text=True)
    assert SECRET not in body
    assert "root:" not in body  # /etc/passwd
    assert "<class" not in body


@pytest.mark.parametrize("name", ["attr-class", "attr-filter", "method-self"])
def test_attribute_access_is_refused_as_unsafe(client, name):
    register(client)

    response = config(client, MAC, name)

    assert "unsafe" in response.json["message"]


def test_a_template_symlinked_out_of_the_workflows_directory_is_not_read(client):
    """Like a workflow file (test_workflows.py), a template may not escape by a symlink."""
    register(client)

    response = config(client, MAC, "symlink-out")

    assert SECRET not in response.get_data(as_text=True)
    assert response.status_code != 200


def test_workflows_check_names_every_config_that_cannot_render(runner):
    result = runner.invoke(args=["workflows", "check", "--offline"])

    assert result.exit_code == 1
    for name in ["misspelt", *HOSTILE_TEMPLATES, *ESCAPING_PATHS]:
        assert f"{WORKFLOW}.yaml: templates.{name}:" in result.output, name
    assert "templates.all.txt" not in result.output
    assert SECRET not in result.output


# -- not found -------------------------------------------------------------------------------


def test_unknown_config_name_is_404_naming_the_known_ones(client):
    register(client)

    response = config(client, MAC, "nope.cfg")

    assert response.status_code == 404
    assert response.is_json
    assert "nope.cfg" in response.json["message"]
    assert "all.txt" in response.json["message"]


def test_workflow_without_templates_has_no_configs(client):
    register(client, workflow="test-os")

    response = config(client, MAC, "ks.cfg")

    assert response.status_code == 404
    assert "has: none" in response.json["message"]


def test_node_without_a_workflow_is_404(client):
    register(client, workflow=None)

    assert config(client, MAC, "all.txt").status_code == 404


def test_unknown_node_is_404_in_open_mode(client):
    response = config(client, UNKNOWN_MAC, "all.txt")

    assert response.status_code == 404
    assert response.is_json


# -- token mode ------------------------------------------------------------------------------

HOW = ["query", "header", "bearer", "seed"]


@pytest.mark.parametrize("report_auth", ["token"])
class TestTokenMode:
    """``REPORT_AUTH = "token"``: a config needs the node's current report token."""

    @pytest.mark.parametrize("how", HOW)
    def test_current_token_renders_the_config_with_it(self, client, how):
        node = register(client)
        token = boot_installer(client)

        values = rendered(config(client, node["id"], "all.txt", token, how))

        assert values["report_token"] == token
        assert values["node_id"] == node["id"]

    def test_the_cmdline_url_of_the_installer_works_as_given(self, client):
        """The ``${report_token}`` put on the kernel command line opens the config."""
        node = register(client)
        args = kernel_args(boot(client))
        url = next(arg.split("=", 1)[1] for arg in args if arg.startswith("cfg="))

        values = rendered(client.get(url.removeprefix(SERVER)))

        assert values["node_id"] == node["id"]
        assert (
            url
            == f"{SERVER}/api/v1/nodes/{node['id']}/config/all.txt?token="
            + (values["report_token"])
        )

    @pytest.mark.parametrize("how", HOW)
    def test_wrong_token_is_401_and_an_unknown_node_gets_the_same_answer(self, client, how):
        register(client)
        boot_installer(client)
        before = rejected("config_token")

        known = config(client, MAC, "all.txt", WRONG_TOKEN, how)
        unknown = config(client, UNKNOWN_MAC, "all.txt", WRONG_TOKEN, how)

        assert known.status_code == 401
        assert known.is_json and "token" in known.json["message"].lower()
        assert (unknown.status_code, unknown.json) == (known.status_code, known.json)
        assert UNKNOWN_MAC not in unknown.get_data(as_text=True)
        assert rejected("config_token") == before + 2

    def test_missing_token_is_401_for_known_and_unknown_nodes(self, client):
        register(client)
        boot_installer(client)

        known = config(client, MAC, "all.txt")
        unknown = config(client, UNKNOWN_MAC, "all.txt")

        assert known.status_code == 401
        assert (unknown.status_code, unknown.json) == (known.status_code, known.json)

    def test_another_nodes_token_is_refused(self, client):
        register(client)
        register(client, OTHER_MAC)
        boot_installer(client)
        other = boot_installer(client, OTHER_MAC)

        assert config(client, MAC, "all.txt", other).status_code == 401

    def test_the_previous_attempts_token_no_longer_opens_the_config(self, client):
        register(client)
        first = boot_installer(client)
        failed = client.post(
            "/api/v1/report",
            json={"mac_address": MAC, "event": "install_failed", "message": "disk"},
            headers={"Authorization": f"Bearer {first}"},
        )
        assert failed.status_code == 200, failed.json
        second = boot_installer(client)

        assert config(client, MAC, "all.txt", first).status_code == 401
        assert rendered(config(client, MAC, "all.txt", second))["report_token"] == second

    def test_a_node_never_served_its_installer_has_no_token_to_match(self, client):
        register(client)

        assert config(client, MAC, "all.txt").status_code == 401
        assert config(client, MAC, "all.txt", "").status_code == 401

    def test_unknown_config_name_with_the_right_token_is_404(self, client):
        register(client)
        token = boot_installer(client)

        assert config(client, MAC, "nope.cfg", token).status_code == 404


def test_open_mode_needs_no_token(client):
    register(client)
    boot_installer(client)

    assert config(client, MAC, "all.txt").status_code == 200


# -- the shipped examples --------------------------------------------------------------------


def kickstart_scripts(text: str) -> dict[str, str]:
    """Each %pre/%post/%onerror... section of a kickstart: header line → body."""
    sections = re.findall(
        r"^(%(?:pre|pre-install|post|onerror|traceback)\b[^\n]*)\n(.*?)^%end$",
        text,
        flags=re.MULTILINE | re.DOTALL,
    )
    return dict(sections)


def preseed_commands(text: str) -> dict[str, str]:
    """The ``*_command`` values of a preseed file (continuation lines joined)."""
    joined = re.sub(r"\\\n", "", text)
    found = re.findall(r"^d-i (\S+_command) string (.*)$", joined, flags=re.MULTILINE)
    return dict(found)


def assert_shell_syntax(script: str, shell: str = "sh") -> None:
    """``shell -n``: the script parses (nothing runs). ``shell`` may be "busybox sh"."""
    result = subprocess.run(
        [*shell.split(), "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{shell} -n: {result.stderr}\n{script}"


def assert_server_urls_answer(client, text: str) -> None:
    """Every GET-able server URL in a rendered config answers 200 (phone-home and report are
    POSTs)."""
    urls = re.findall(re.escape(SERVER) + r"(/api/v1/[^\s'\"]+)", text)
    assert urls
    for url in urls:
        if "/phone-home" in url or url == "/api/v1/report":
            continue
        response = client.get(url)
        assert response.status_code == 200, (url, response.get_data(as_text=True))


@pytest.fixture
def examples_app_config(app_config: dict) -> dict:
    return app_config | {"WORKFLOWS_DIR": str(EXAMPLE_WORKFLOWS), "REPORT_AUTH": "token"}


@pytest.fixture
def example_client(examples_app_config: dict, monkeypatch: pytest.MonkeyPatch):
    """A client of an app serving the shipped example workflows, in token mode."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    application = create_app(examples_app_config)
    upgrade_database(application)
    yield application.test_client()
    with application.app_context():
        db.engine.dispose()


def install_example(client, workflow: str) -> tuple[dict, list[str], str]:
    """Register a sample node for ``workflow``, boot it; (node, kernel args, token)."""
    node = register(client, workflow=workflow, hostname="node-7")
    args = kernel_args(boot(client))
    token_args = [arg for arg in args if "token=" in arg or "/seed/" in arg]
    assert token_args, args
    token = re.search(r"(?:token=|/seed/)([A-Za-z0-9_-]{43,})", " ".join(token_args)).group(1)
    return node, args, token


def fetch(client, url: str) -> str:
    """GET a server URL as the installer would; the body."""
    assert url.startswith(SERVER + "/"), url
    response = client.get(url.removeprefix(SERVER))
    assert response.status_code == 200, (url, response.get_data(as_text=True))
    text = response.get_data(as_text=True)
    assert "{{" not in text and "{%" not in text
    return text


def arg_value(args: list[str], prefix: str) -> str:
    return next(arg.removeprefix(prefix) for arg in args if arg.startswith(prefix))


def test_rocky_kickstart_from_inst_ks(example_client):
    client = example_client
    node, args, token = install_example(client, "rocky-9")

    text = fetch(client, arg_value(args, "inst.ks="))

    scripts = kickstart_scripts(text)
    headers = [header.split()[0] for header in scripts]
    assert headers.count("%pre") == 1 and "%onerror" in headers and "%pre-install" in headers
    assert any("--nochroot" in header for header in scripts)
    for header, body in scripts.items():
        assert_shell_syntax(body, "bash")  # anaconda runs these with bash
        assert "provisioner-report" in body, header
    assert f"report.sh?mac={MAC}&token={token}" in text
    assert "install_started" in text and "install_complete" in text
    assert "install_failed" in scripts["%onerror"]
    assert "systemctl enable provisioner-first-boot.service" in text
    assert "--hostname=node-7" in text
    assert_server_urls_answer(client, text)


def test_rocky_kickstart_passes_ksvalidator(example_client, tmp_path):
    """pykickstart's own validator, for RHEL 9 syntax (skipped where it is not installed)."""
    pytest.importorskip("pykickstart", reason="pykickstart is not installed (pip install it)")
    from pykickstart.parser import KickstartParser
    from pykickstart.version import RHEL9
    from pykickstart.version import makeVersion

    _, args, _ = install_example(example_client, "rocky-9")
    parser = KickstartParser(makeVersion(RHEL9))
    parser.readKickstartFromString(fetch(example_client, arg_value(args, "inst.ks=")))


def test_ubuntu_autoinstall_from_the_nocloud_seed(example_client):
    client = example_client
    node, args, token = install_example(client, "ubuntu-24.04")
    seed = arg_value(args, "ds=nocloud;s=")
    assert seed.endswith(f"/seed/{token}/")

    user_data = fetch(client, seed + "user-data")
    meta_data = yaml.safe_load(fetch(client, seed + "meta-data"))
    vendor_data = fetch(client, seed + "vendor-data")

    assert user_data.startswith("#cloud-config\n")
    autoinstall = yaml.safe_load(user_data)["autoinstall"]
    assert autoinstall["version"] == 1
    assert autoinstall["identity"]["hostname"] == "node-7"
    for key in ("early-commands", "late-commands", "error-commands"):
        for command in autoinstall[key]:
            assert_shell_syntax(command)
    commands = " ".join(autoinstall["early-commands"] + autoinstall["late-commands"])
    assert "install_started" in commands and "install_complete" in commands
    assert "install_failed" in " ".join(autoinstall["error-commands"])
    assert f"report.sh?mac={MAC}&token={token}" in commands
    phone_home = autoinstall["user-data"]["phone_home"]
    assert phone_home["url"] == f"{SERVER}/api/v1/nodes/{node['id']}/phone-home?token={token}"
    assert phone_home["post"] == "all"
    assert meta_data == {"instance-id": f"provisioner-{node['id']}", "local-hostname": "node-7"}
    assert yaml.safe_load(vendor_data) == {}
    assert_server_urls_answer(client, user_data)


@pytest.mark.parametrize("part", ["user-data", "autoinstall-user-data", "vendor-data"])
def test_ubuntu_cloud_config_passes_cloud_init_schema(example_client, tmp_path, part):
    """cloud-init's own schema check (the installer validates the nested user-data too)."""
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.skip("cloud-init is not installed (make e2e-deps)")
    _, args, _ = install_example(example_client, "ubuntu-24.04")
    seed = arg_value(args, "ds=nocloud;s=")
    if part == "autoinstall-user-data":
        nested = yaml.safe_load(fetch(example_client, seed + "user-data"))["autoinstall"]
        text = "#cloud-config\n" + yaml.safe_dump(nested["user-data"])
    else:
        text = fetch(example_client, seed + part)
    path = tmp_path / part
    path.write_text(text)

    result = subprocess.run(
        [cloud_init, "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_debian_preseed_from_url_and_its_hooks(example_client):
    client = example_client
    node, args, token = install_example(client, "debian-12")

    preseed = fetch(client, arg_value(args, "url="))

    commands = preseed_commands(preseed)
    assert set(commands) == {
        "preseed/early_command",
        "partman/early_command",
        "preseed/late_command",
    }
    for command in commands.values():
        assert_shell_syntax(command)
    hooks_url = re.search(r"'(http://\S+/config/hooks\.sh\?token=\S+)'", preseed).group(1)
    assert hooks_url == f"{SERVER}/api/v1/nodes/{node['id']}/config/hooks.sh?token={token}"
    hooks = fetch(client, hooks_url)
    for shell in ("sh", "dash", "busybox sh"):  # the installer runs it with busybox sh
        if shutil.which(shell.split()[0]):
            assert_shell_syntax(hooks, shell)
    assert f"report.sh?mac={MAC}&token={token}" in hooks
    for event in ("install_started", "install_progress", "install_complete", "install_failed"):
        assert event in hooks
    assert "in-target systemctl enable provisioner-first-boot.service" in hooks
    assert "hostname=node-7" in args  # on the command line: netcfg runs before the preseed
    assert "netcfg/get_hostname" not in preseed
    assert_server_urls_answer(client, preseed + hooks)


def test_debian_preseed_passes_debconf_set_selections(example_client, tmp_path):
    """debconf's own parser reads every line (skipped where debconf is not installed)."""
    checker = shutil.which("debconf-set-selections")
    if checker is None:
        pytest.skip("debconf-set-selections is not installed")
    _, args, _ = install_example(example_client, "debian-12")
    path = tmp_path / "preseed.cfg"
    path.write_text(fetch(example_client, arg_value(args, "url=")))

    result = subprocess.run(
        [checker, "--checkonly", str(path)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0 and not result.stderr, result.stderr


def first_boot_unit(text: str) -> str:
    return re.search(r"^\[Unit\]\n.*?^WantedBy=multi-user\.target$", text, re.S | re.M).group(0)


def test_the_first_boot_unit_is_the_same_in_the_kickstart_and_the_debian_hooks():
    """Two copies of one unit (each example stands alone); they must not drift apart."""
    kickstart = (EXAMPLE_WORKFLOWS / "rocky-9" / "ks.cfg.j2").read_text()
    hooks = (EXAMPLE_WORKFLOWS / "debian-12" / "hooks.sh.j2").read_text()

    unit = first_boot_unit(kickstart)

    assert unit == first_boot_unit(hooks)
    assert "ConditionPathExists=!/var/lib/provisioner/first-boot-reported" in unit
    assert "ExecStart=/usr/local/bin/provisioner-report first_boot" in unit


def test_every_example_template_is_used_by_a_workflow():
    """No orphan template files: each is named by some workflow's ``templates:``."""
    named = set()
    for path in EXAMPLE_WORKFLOWS.glob("*.yaml"):
        named |= set(yaml.safe_load(path.read_text()).get("templates", {}).values())
    files = {
        str(path.relative_to(EXAMPLE_WORKFLOWS))
        for path in EXAMPLE_WORKFLOWS.glob("*/*")
        if path.is_file()
    }

    assert files == named
    assert len(named) >= 4
