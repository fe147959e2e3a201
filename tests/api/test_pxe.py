"""PXE: the dnsmasq configuration provisioner writes, and how it runs dnsmasq.

The configuration is checked by the real dnsmasq (``--test``) where it is installed; the
supervisor is driven with a stand-in dnsmasq (a small script that logs like dnsmasq and
exits or sleeps as told), so start-up failures, restarts and the log can be provoked
without binding port 67. ``test_e2e_pxe.py`` boots real machines through the real thing.
"""

import dataclasses
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from polling import wait_for
from serverproc import process_alive

from provisioner import create_app
from provisioner.cli import main
from provisioner.config import DEFAULTS
from provisioner.pxe.dnsmasq_conf import PxeError
from provisioner.pxe.dnsmasq_conf import PxePlan
from provisioner.pxe.dnsmasq_conf import chain_url
from provisioner.pxe.dnsmasq_conf import find_boot_files
from provisioner.pxe.dnsmasq_conf import interface_ipv4
from provisioner.pxe.dnsmasq_conf import plan_from_config
from provisioner.pxe.dnsmasq_conf import render
from provisioner.pxe.supervisor import DnsmasqSupervisor
from provisioner.pxe.supervisor import check_reachable
from provisioner.pxe.supervisor import dnsmasq_command
from provisioner.pxe.supervisor import explain_failure
from provisioner.pxe.supervisor import find_dnsmasq
from provisioner.pxe.supervisor import start_pxe

DEADLINE_SECONDS = 30.0


def ipxe_dir(tmp_path: Path, *names: str) -> Path:
    """A TFTP root holding (empty stand-ins for) the iPXE builds ``names``."""
    root = tmp_path / "ipxe"
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"stand-in")
    return root


def settings(tmp_path: Path, **overrides) -> dict:
    root = ipxe_dir(tmp_path, "undionly.kpxe", "snponly.efi", "ipxe.efi")
    return DEFAULTS | {"PXE": True, "PXE_INTERFACE": "lo", "PXE_IPXE_DIR": str(root)} | overrides


def plan(tmp_path: Path, **overrides) -> PxePlan:
    return plan_from_config(settings(tmp_path, **overrides), 8080)


def lines(config: str) -> list[str]:
    return [line for line in config.splitlines() if line and not line.startswith("#")]


# -- the configuration ----------------------------------------------------------------------


def test_loopback_interface_address_and_network_are_read_from_the_kernel():
    assert interface_ipv4("lo") == ipaddress.IPv4Interface("127.0.0.1/8")


@pytest.mark.parametrize(
    ("name", "problem"),
    [("nosuch0", "no interface 'nosuch0'"), ("a" * 16, "not an interface name"), ("", "not an")],
)
def test_an_unusable_interface_is_named_with_its_setting(name, problem):
    with pytest.raises(PxeError) as raised:
        interface_ipv4(name)
    assert str(raised.value).startswith("config key PXE_INTERFACE: ")
    assert problem in str(raised.value)


def test_pxe_without_an_interface_says_which_key_to_set(tmp_path):
    with pytest.raises(PxeError, match="config key PXE_INTERFACE: set it"):
        plan(tmp_path, PXE_INTERFACE="")


def test_chain_url_is_under_server_url_else_the_interface_address_and_port():
    address = ipaddress.IPv4Address("192.168.1.5")
    assert chain_url("", address, 8080) == "http://192.168.1.5:8080/api/v1/ipxe/boot.ipxe"
    assert (
        chain_url("https://prov.example/pxe/", address, 8080)
        == "https://prov.example/pxe/api/v1/ipxe/boot.ipxe"
    )


def test_a_chain_url_longer_than_the_boot_file_field_is_refused():
    long_url = "http://" + "x" * 110 + ".example"
    with pytest.raises(PxeError, match="config key SERVER_URL: .* over 127 characters"):
        chain_url(long_url, ipaddress.IPv4Address("10.0.0.1"), 80)


def test_proxy_dhcp_on_the_interface_subnet_with_no_dns_and_no_leases(tmp_path):
    config = lines(render(plan(tmp_path)))
    assert config[:5] == ["port=0", "bind-interfaces", "interface=lo", "leasefile-ro", "pid-file="]
    assert "dhcp-range=127.0.0.0,proxy,255.0.0.0" in config
    assert "enable-tftp" in config
    assert f"tftp-root={tmp_path / 'ipxe'}" in config


def test_ipxe_gets_the_chain_url_and_plain_pxe_gets_ipxe_for_its_architecture(tmp_path):
    config = lines(render(plan(tmp_path, SERVER_URL="http://10.9.8.7:8080")))
    assert config[-7:] == [
        "dhcp-userclass=set:ipxe,iPXE",
        "tag-if=set:firststage,tag:!ipxe",
        "tag-if=set:chain,tag:!firststage",
        "dhcp-boot=tag:chain,http://10.9.8.7:8080/api/v1/ipxe/boot.ipxe,,127.0.0.1",
        'pxe-service=tag:firststage,0,"provisioner: iPXE for BIOS",undionly.kpxe',
        'pxe-service=tag:firststage,7,"provisioner: iPXE for UEFI x86-64",snponly.efi',
        'pxe-service=tag:firststage,9,"provisioner: iPXE for UEFI x86-64",snponly.efi',
    ]


def test_arm64_is_served_where_the_ipxe_package_has_a_build(tmp_path):
    ipxe_dir(tmp_path, "ipxe-arm64.efi")
    config = render(plan(tmp_path))
    assert 'pxe-service=tag:firststage,11,"provisioner: iPXE for UEFI arm64",ipxe-arm64.efi' in (
        config
    )
    assert "# no iPXE build" not in config


def test_missing_builds_are_left_out_and_named(tmp_path):
    root = ipxe_dir(tmp_path, "ipxe.efi")
    files, missing = find_boot_files(root)
    assert [(boot.arch, boot.name) for boot in files] == [(7, "ipxe.efi"), (9, "ipxe.efi")]
    assert [label.split(" (")[0] for label in missing] == ["BIOS", "UEFI arm64"]


def test_a_directory_without_ipxe_says_to_install_it(tmp_path):
    with pytest.raises(PxeError, match="config key PXE_IPXE_DIR: .* install Debian's ipxe"):
        find_boot_files(tmp_path)


def test_chainloading_ipxe_roms_tags_the_bios_rom_vendor_class_as_a_first_stage(tmp_path):
    config = lines(render(plan(tmp_path, PXE_CHAINLOAD_IPXE_ROM=True)))
    rom = config.index("dhcp-vendorclass=set:biosrom,PXEClient:Arch:00000:UNDI")
    assert config[rom + 1] == "tag-if=set:firststage,tag:biosrom"
    # tag-if lines run in order: the first stage must be known before "chain" is worked out
    assert rom < config.index("tag-if=set:chain,tag:!firststage")
    assert not any("biosrom" in line for line in lines(render(plan(tmp_path))))


@pytest.mark.parametrize("chainload", [False, True])
def test_real_dnsmasq_accepts_the_configuration(tmp_path, chainload):
    dnsmasq = shutil.which("dnsmasq", path=os.environ["PATH"] + ":/usr/sbin")
    if dnsmasq is None:
        pytest.skip("dnsmasq not found: install Debian's dnsmasq-base (make e2e-deps)")
    path = tmp_path / "pxe.conf"
    path.write_text(render(plan(tmp_path, PXE_CHAINLOAD_IPXE_ROM=chainload)))
    checked = subprocess.run(
        [dnsmasq, "--test", f"--conf-file={path}"], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax check OK" in checked.stderr


def test_pxe_config_command_prints_what_serve_runs(tmp_path, monkeypatch):
    root = ipxe_dir(tmp_path, "undionly.kpxe", "snponly.efi")
    monkeypatch.setenv("PROVISIONER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PROVISIONER_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text(f'PXE_IPXE_DIR = "{root}"\n')
    result = CliRunner().invoke(main, ["pxe", "config", "--interface", "lo", "--port", "8099"])
    assert result.exit_code == 0, result.output
    expected = render(plan_from_config(settings(tmp_path, PXE_IPXE_DIR=str(root)), 8099))
    assert result.output == expected
    assert "http://127.0.0.1:8099/api/v1/ipxe/boot.ipxe" in result.output


def test_pxe_config_command_without_an_interface_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISIONER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PROVISIONER_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(main, ["pxe", "config"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: config key PXE_INTERFACE: set it to the interface on the")


# -- start-up checks --------------------------------------------------------------------------


def lan_plan(tmp_path: Path) -> PxePlan:
    """A plan for an interface at 192.168.1.5/24 (this host's may have no such one)."""
    return dataclasses.replace(
        plan(tmp_path),
        interface="eth1",
        address=ipaddress.IPv4Interface("192.168.1.5/24"),
        chain_url="http://192.168.1.5:8080/api/v1/ipxe/boot.ipxe",
    )


@pytest.mark.parametrize(
    ("host", "where"),
    [("127.0.0.1", "loopback only"), ("localhost", "loopback only"), ("10.1.2.3", "10.1.2.3")],
)
def test_a_server_machines_cannot_reach_is_refused(tmp_path, host, where):
    with pytest.raises(PxeError) as raised:
        check_reachable(lan_plan(tmp_path), settings(tmp_path), host)
    message = str(raised.value)
    assert message.startswith("PXE on PXE_INTERFACE=eth1: the chain URL http://192.168.1.5")
    assert f"serve listens on {where}" in message
    assert "serve --host 0.0.0.0 (or --host 192.168.1.5)" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_a_server_on_the_interface_address_is_reachable(tmp_path, host):
    check_reachable(lan_plan(tmp_path), settings(tmp_path), host)


def test_server_url_vouches_for_reachability(tmp_path):
    config = settings(tmp_path, SERVER_URL="http://x:1")
    check_reachable(lan_plan(tmp_path), config, "127.0.0.1")


def test_pxe_off_starts_nothing(tmp_path):
    assert start_pxe(DEFAULTS, str(tmp_path), "0.0.0.0", 8080) is None
    assert not list(tmp_path.iterdir())


def test_a_missing_dnsmasq_names_its_setting_and_package():
    with pytest.raises(PxeError, match="config key PXE_DNSMASQ: .* dnsmasq-base"):
        find_dnsmasq("no-such-dnsmasq-binary")


@pytest.mark.parametrize(
    ("said", "hint"),
    [
        (
            "dnsmasq: failed to create listening socket for port 67: Address already in use",
            "another DHCP/TFTP server on this host holds port 67",
        ),
        ("dnsmasq: failed to bind DHCP server socket: Permission denied", "need root or"),
        ("dnsmasq: unknown interface br9", "check PXE_INTERFACE"),
        ("dnsmasq: something new", "see its log lines above"),
    ],
)
def test_start_up_failures_say_what_to_do(said, hint):
    output = ["dnsmasq[12]: compile time options: IPv6 DHCP", said]
    message = explain_failure(output, "br9")
    assert message.startswith("PXE on PXE_INTERFACE=br9: dnsmasq could not start: ")
    assert said.removeprefix("dnsmasq: ") in message
    assert hint in message
    assert "\n" not in message


def test_app_knows_the_pxe_settings(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path), "PXE": "true", "PXE_INTERFACE": "eth1"})
    assert app.config["PXE"] is True
    assert app.config["PXE_INTERFACE"] == "eth1"
    assert app.config["PXE_IPXE_DIR"] == "/usr/lib/ipxe"


# -- the supervisor, with a stand-in dnsmasq --------------------------------------------------

FAKE_DNSMASQ = """\
import os, signal, sys
pid = os.getpid()
mode = sys.argv[1]
with open(sys.argv[2], "a") as runs:
    runs.write(f"{pid}\\n")
print(f"dnsmasq[{pid}]: compile time options: IPv6 DHCP TFTP", file=sys.stderr, flush=True)
if mode == "busy":
    print("dnsmasq: failed to create listening socket for port 67: Address already in use",
          file=sys.stderr, flush=True)
    sys.exit(2)
if mode == "mute":
    signal.pause()  # says nothing until the supervisor stops it
print(f"dnsmasq[{pid}]: started, version 2.90 DNS disabled", file=sys.stderr, flush=True)
print(f"dnsmasq-dhcp[{pid}]: PXE(br0) 52:54:00:23:00:01 proxy", file=sys.stderr, flush=True)
print(f"dnsmasq-tftp[{pid}]: failed sending /x/y to 10.0.0.9", file=sys.stderr, flush=True)
signal.pause()  # runs, like dnsmasq, until a signal stops it
"""


@pytest.fixture
def fake_dnsmasq(tmp_path):
    """A command running the stand-in dnsmasq in ``mode``; its pids go to ``runs``."""
    script = tmp_path / "fake_dnsmasq.py"
    script.write_text(FAKE_DNSMASQ)
    runs = tmp_path / "runs"
    runs.touch()

    def command(mode: str) -> list[str]:
        return [sys.executable, str(script), mode, str(runs)]

    command.runs = runs
    return command


@pytest.fixture
def supervisors():
    """Supervisors made by a test, stopped when it ends whatever happened."""
    made: list[DnsmasqSupervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop()


def test_dnsmasq_is_up_once_it_says_started_and_its_lines_reach_the_log(
    fake_dnsmasq, supervisors, caplog
):
    caplog.set_level(logging.INFO)
    supervisor = DnsmasqSupervisor(fake_dnsmasq("ok"), "br0")
    supervisors.append(supervisor)
    supervisor.start()
    assert supervisor.pid is not None and process_alive(supervisor.pid)
    wait_for(lambda: "failed sending" in caplog.text, "dnsmasq line in the log", DEADLINE_SECONDS)

    forwarded = [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "provisioner.pxe.dnsmasq"
    ]
    assert ("INFO", "dnsmasq-dhcp: PXE(br0) 52:54:00:23:00:01 proxy") in forwarded
    assert ("WARNING", "dnsmasq-tftp: failed sending /x/y to 10.0.0.9") in forwarded
    assert ("INFO", "dnsmasq: started, version 2.90 DNS disabled") in forwarded


def test_a_dnsmasq_that_cannot_bind_stops_start_with_one_line(fake_dnsmasq, supervisors):
    supervisor = DnsmasqSupervisor(fake_dnsmasq("busy"), "br0")
    supervisors.append(supervisor)
    with pytest.raises(PxeError) as raised:
        supervisor.start()
    message = str(raised.value)
    assert message.startswith("PXE on PXE_INTERFACE=br0: dnsmasq could not start: failed to")
    assert "Address already in use; another DHCP/TFTP server" in message
    assert supervisor.pid is None


def test_a_dnsmasq_that_never_starts_is_killed_and_reported(fake_dnsmasq, supervisors):
    supervisor = DnsmasqSupervisor(fake_dnsmasq("mute"), "br0", start_timeout=0.5)
    supervisors.append(supervisor)
    with pytest.raises(PxeError, match="dnsmasq did not start within 0.5 s"):
        supervisor.start()
    (pid,) = map(int, fake_dnsmasq.runs.read_text().split())
    assert not process_alive(pid)


def test_a_dnsmasq_that_dies_is_reported_and_started_again(fake_dnsmasq, supervisors, caplog):
    supervisor = DnsmasqSupervisor(fake_dnsmasq("ok"), "br0", first_restart_delay=0.05)
    supervisors.append(supervisor)
    supervisor.start()
    first = supervisor.pid
    os.kill(first, signal.SIGKILL)

    wait_for(
        lambda: caplog.text.count("serves proxy DHCP") == 2, "second dnsmasq up", DEADLINE_SECONDS
    )
    assert process_alive(supervisor.pid)
    assert not process_alive(first)  # reaped, not a zombie
    assert supervisor.restarts == 1
    assert "PXE: dnsmasq exited with code -9" in caplog.text
    assert fake_dnsmasq.runs.read_text().split() == [str(first), str(supervisor.pid)]


def test_stop_ends_dnsmasq_and_starts_no_other(fake_dnsmasq, supervisors, caplog):
    supervisor = DnsmasqSupervisor(fake_dnsmasq("ok"), "br0", first_restart_delay=0.05)
    supervisors.append(supervisor)
    supervisor.start()
    pid = supervisor.pid
    supervisor.stop()

    assert supervisor.pid is None
    assert not process_alive(pid)
    assert fake_dnsmasq.runs.read_text().split() == [str(pid)]
    assert "exited with code" not in caplog.text


def test_the_supervised_command_keeps_dnsmasq_in_the_foreground_logging_to_stderr(tmp_path):
    assert dnsmasq_command("/usr/sbin/dnsmasq", tmp_path / "c.conf") == [
        "/usr/sbin/dnsmasq",
        "--keep-in-foreground",
        "--log-facility=-",
        f"--conf-file={tmp_path / 'c.conf'}",
    ]
