"""Power control against the BMC emulators Ironic's CI uses, driving real libvirt VMs.

virtualbmc (IPMI, pyghmi's server) and sushy-tools' ``sushy-emulator`` (Redfish) front a
libvirt domain (QEMU in TCG mode); provisioner reaches them through ipmitool and sushy.
The last test is the whole loop: a node set to reinstall with ``power: true`` has its VM
switched to network boot and powered on by virtualbmc, the VM's iPXE fetches the boot
script from ``provisioner serve`` and the installer's kernel, and the node goes
``pending -> installing`` with nobody touching it.

libvirtd must run (``tests/power/start-libvirt.sh``, which ``.ci/run`` calls, starts it as
root); the tests skip, saying so, where it does not.
"""

import shutil
import socket
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from paths import TESTS_DIR
from powerhelpers import events_of
from powerhelpers import finished_action
from powerhelpers import free_port
from powerhelpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

URI = "qemu:///system"
VBMC_SERVER = TESTS_DIR / "power" / "vbmc_server.py"
USER, PASSWORD = "admin", "Vbmc-S3cret"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def libvirt_problem() -> str | None:
    if shutil.which("virsh") is None or shutil.which("ipmitool") is None:
        return "virsh or ipmitool missing (make e2e-deps)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (the test extra builds it with libvirt-dev)"
    done = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, timeout=60)
    if done.returncode != 0:
        return (
            "libvirtd does not answer on qemu:///system (tests/power/start-libvirt.sh starts it)"
        )
    return None


@pytest.fixture(scope="module")
def libvirt_conn():
    problem = libvirt_problem()
    if problem:
        pytest.skip(problem)
    import libvirt

    conn = libvirt.open(URI)
    yield conn
    conn.close()


def domain_xml(name: str, domain_uuid: str, mac: str, extra_netdev: str | None) -> str:
    """A TCG guest with no disk; one virtio NIC libvirt knows (for sushy-emulator's boot
    override), or one on QEMU's user network whose DHCP names the boot file."""
    nic = (
        f"<interface type='user'><mac address='{mac}'/><model type='virtio'/></interface>"
        if extra_netdev is None
        else ""
    )
    commandline = (
        f"<qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='{extra_netdev}'/>"
        "<qemu:arg value='-device'/>"
        f"<qemu:arg value='virtio-net-pci,netdev=pxe0,mac={mac},bus=pci.0,addr=0x10'/>"
        "</qemu:commandline>"
        if extra_netdev
        else ""
    )
    return f"""
<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>{name}</name>
  <uuid>{domain_uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_reboot>restart</on_reboot>
  <devices>
    {nic}
    <serial type='file'><source path='/tmp/{name}.console'/></serial>
    <graphics type='vnc' port='-1' listen='127.0.0.1'/>
    <memballoon model='none'/>
  </devices>
  {commandline}
</domain>"""


@pytest.fixture
def make_domain(libvirt_conn) -> Iterator:
    made = []

    def make(mac: str, extra_netdev: str | None = None):
        name = f"prov-power-{uuid.uuid4().hex[:8]}"
        domain = libvirt_conn.defineXML(domain_xml(name, str(uuid.uuid4()), mac, extra_netdev))
        made.append(domain)
        return domain

    yield make
    for domain in made:
        if domain.isActive():
            domain.destroy()
        domain.undefine()
        Path(f"/tmp/{domain.name()}.console").unlink(missing_ok=True)


def start_vbmc(domain) -> tuple[subprocess.Popen, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(VBMC_SERVER), str(port), USER, PASSWORD, domain.name(), URI],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        done = subprocess.run(
            [
                "ipmitool",
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                USER,
                "-P",
                PASSWORD,
                "-N",
                "1",
                "-R",
                "1",
                "power",
                "status",
            ],
            capture_output=True,
        )
        return done.returncode == 0

    wait_for(answers, "virtualbmc to answer", 60)
    return process, address


@pytest.fixture
def vbmc(make_domain) -> Iterator:
    processes = []

    def start(domain):
        process, address = start_vbmc(domain)
        processes.append(process)
        return address

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.fixture
def sushy_emulator(tmp_path: Path) -> Iterator:
    import bcrypt

    processes = []

    def start(domain) -> str:
        htpasswd = tmp_path / "htpasswd"
        digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{USER}:{digest}\n")
        config = tmp_path / "emulator.conf"
        config.write_text(
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
            f"SUSHY_EMULATOR_ALLOWED_INSTANCES = [{domain.UUIDString()!r}]\n"
        )
        port = free_port()
        emulator = Path(sys.executable).parent / "sushy-emulator"
        process = subprocess.Popen(
            [
                str(emulator),
                "--config",
                str(config),
                "--libvirt-uri",
                URI,
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        root = f"http://127.0.0.1:{port}/redfish/v1/"

        def answers() -> bool:
            try:
                return requests.get(root, timeout=5).status_code in (200, 401)
            except requests.RequestException:
                return False

        wait_for(answers, "sushy-emulator to answer", 60)
        return f"{root}Systems/{domain.UUIDString()}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def boot_devices(domain) -> list[str]:
    tree = ET.fromstring(domain.XMLDesc())
    return [boot.get("dev") for boot in tree.findall("os/boot")]


def power_node(client, mac: str, **power) -> str:
    node = client.post("/api/v1/nodes", json={"mac_address": mac}).json["data"]
    response = client.patch(f"/api/v1/nodes/{node['id']}", json={"power": power})
    assert response.status_code == 200, response.json
    return node["id"]


def act(client, node_id: str, action: str) -> dict:
    response = client.post(f"/api/v1/nodes/{node_id}/power", json={"action": action})
    assert response.status_code == 202, response.json
    return finished_action(client, response.json["data"]["id"])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_virtualbmc_netboots_and_powers_a_libvirt_vm(client, make_domain, vbmc):
    domain = make_domain("52:54:00:a1:00:01")
    address = vbmc(domain)
    node_id = power_node(
        client,
        "52:54:00:a1:00:01",
        driver="ipmi",
        address=address,
        username=USER,
        password=PASSWORD,
    )
    assert act(client, node_id, "status")["result"] == "off"
    netboot = act(client, node_id, "netboot")
    assert netboot["status"] == "succeeded", netboot
    assert domain.isActive()
    assert boot_devices(domain) == ["network"]
    assert act(client, node_id, "cycle")["status"] == "succeeded"
    assert act(client, node_id, "off")["status"] == "succeeded"
    assert not domain.isActive()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sushy_emulator_sets_pxe_once_and_powers_a_libvirt_vm(client, make_domain, sushy_emulator):
    domain = make_domain("52:54:00:a1:00:03")
    url = sushy_emulator(domain)
    node_id = power_node(
        client,
        "52:54:00:a1:00:03",
        driver="redfish",
        address=url,
        username=USER,
        password=PASSWORD,
    )
    assert act(client, node_id, "status")["result"] == "off"
    netboot = act(client, node_id, "netboot")
    assert netboot["status"] == "succeeded", netboot
    assert domain.isActive()
    assert "network" in boot_devices(domain) or "<boot order='1'/>" in domain.XMLDesc()
    assert act(client, node_id, "status")["result"] == "on"
    assert act(client, node_id, "off")["status"] == "succeeded"
    assert not domain.isActive()


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("driver", "emulator", "mac"),
    [("ipmi", "vbmc", "52:54:00:a1:00:02"), ("redfish", "sushy_emulator", "52:54:00:a1:00:04")],
)
def test_a_wrong_bmc_password_is_refused_without_echo(
    client, make_domain, request, driver, emulator, mac
):
    domain = make_domain(mac)
    address = request.getfixturevalue(emulator)(domain)
    node_id = power_node(
        client, mac, driver=driver, address=address, username=USER, password="Not-The-Password"
    )
    action = act(client, node_id, "on")
    assert action["status"] == "failed"
    assert "refused the user name or password" in action["error"]
    assert "Not-The-Password" not in str(events_of(client, node_id))
    assert not domain.isActive()


def test_reinstall_with_power_netboots_the_vm_into_installing(make_domain, vbmc, tmp_path):
    """The whole loop, hands off: reprovision -> pending with power, and the VM does the rest."""
    from serverproc import ServerProcess
    from serverproc import sqlite_settings

    from e2e.test_e2e_qemu import FAKE_INITRD
    from e2e.test_e2e_qemu import FAKE_KERNEL
    from e2e.test_e2e_qemu import HOST_FROM_GUEST
    from e2e.test_e2e_qemu import INITRD_PATH
    from e2e.test_e2e_qemu import KERNEL_PATH
    from e2e.test_e2e_qemu import FileServer

    mac = "52:54:00:a1:00:05"
    with FileServer({KERNEL_PATH: FAKE_KERNEL, INITRD_PATH: FAKE_INITRD}) as files:
        workflows = tmp_path / "workflows"
        workflows.mkdir()
        (workflows / "power-e2e.yaml").write_text(
            "id: power-e2e\nname: Power E2E\n"
            f"kernel_path: {files.url_from_guest(KERNEL_PATH)}\n"
            f"initrd_path: {files.url_from_guest(INITRD_PATH)}\n"
            "cmdline: console=ttyS0\n"
        )
        port = free_port()
        env = sqlite_settings(
            tmp_path, WORKFLOWS_DIR=workflows, SERVER_URL=f"http://{HOST_FROM_GUEST}:{port}"
        )
        with ServerProcess(env, tmp_path, port=port) as server:
            bootfile = f"http://{HOST_FROM_GUEST}:{port}/api/v1/ipxe/boot.ipxe"
            domain = make_domain(mac, extra_netdev=f"user,id=pxe0,bootfile={bootfile}")
            address = vbmc(domain)
            status, _, body = server.post_json(
                "/api/v1/nodes", {"mac_address": mac, "workflow_id": "power-e2e"}
            )
            assert status == 201, body
            node_id = body["data"]["id"]
            power = {"driver": "ipmi", "address": address, "username": USER, "password": PASSWORD}
            assert server.patch_json(f"/api/v1/nodes/{node_id}", {"power": power})[0] == 200
            moved = server.patch_json(
                f"/api/v1/nodes/{node_id}/state", {"state": "active", "force": True}
            )
            assert moved[0] == 200, moved
            assert (
                server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "reprovision"})[0]
                == 200
            )
            assert not domain.isActive()  # nobody has touched the machine yet
            status, _, body = server.patch_json(
                f"/api/v1/nodes/{node_id}/state", {"state": "pending", "power": True}
            )
            assert status == 200, body

            def state() -> str:
                return server.get(f"/api/v1/nodes/{node_id}")[2]["data"]["state"]

            console = Path(f"/tmp/{domain.name()}.console")
            try:
                wait_for(lambda: state() == "installing", "the node to be installing", 240)
            except AssertionError:
                text = console.read_text(errors="replace")[-3000:] if console.exists() else ""
                raise AssertionError(
                    f"state {state()}; console:\n{text}\nserver log:\n{server.log_tail()}"
                ) from None
            assert domain.isActive()
            assert boot_devices(domain) == ["network"]
            wait_for(lambda: KERNEL_PATH in files.paths(), "iPXE to fetch the kernel", 120)
            events = server.get(f"/api/v1/nodes/{node_id}/events?limit=100")[2]["data"]
            assert "power_netboot" in [event["event_type"] for event in events]
            history = server.get(f"/api/v1/nodes/{node_id}/history")[2]["data"]
            assert [entry["to_state"] for entry in history][-2:] == ["pending", "installing"]
