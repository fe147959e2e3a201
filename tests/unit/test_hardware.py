"""What a machine told iPXE about itself, on its own: architecture names, firmware
platforms, and whether a workflow's architecture and boot mode fit the machine. How the boot
endpoint answers a misfit: tests/api/test_boot.py."""

import pytest

from provisioner.domain.booting import boot_mode_mismatch
from provisioner.domain.booting import default_hostname
from provisioner.domain.hardware import ARCH_ALIASES
from provisioner.domain.hardware import architecture_fits
from provisioner.domain.hardware import boot_mode_of
from provisioner.domain.hardware import normalize_arch


@pytest.mark.parametrize(("alias", "name"), list(ARCH_ALIASES.items()))
def test_every_spelling_of_an_architecture_is_one_name(alias, name):
    assert normalize_arch(alias) == name
    assert normalize_arch(f" {alias.upper()} ") == name


@pytest.mark.parametrize(("value", "name"), [("riscv64", "riscv64"), ("PPC64LE", "ppc64le")])
def test_an_unknown_architecture_is_kept_lower_cased(value, name):
    assert normalize_arch(value) == name


@pytest.mark.parametrize("value", [None, ""])
def test_no_architecture_is_none(value):
    assert normalize_arch(value) is None


@pytest.mark.parametrize(
    ("platform", "mode"),
    [
        ("pcbios", "bios"),
        ("efi", "uefi"),
        (" EFI ", "uefi"),
        ("arm", None),
        ("", None),
        (None, None),
    ],
)
def test_ipxes_platform_is_a_boot_mode(platform, mode):
    assert boot_mode_of(platform) == mode


@pytest.mark.parametrize(
    ("wanted", "machine", "fits"),
    [
        ("i386", "x86_64", True),  # a 64-bit CPU runs a 32-bit installer
        ("i686", "amd64", True),
        ("arm32", "arm64", False),
        ("arm64", "armhf", False),
        ("x86_64", "riscv64", False),
        ("riscv64", "riscv64", True),
        (None, "arm64", True),
        ("arm64", "", True),
    ],
)
def test_architecture_families(wanted, machine, fits):
    assert architecture_fits(wanted, machine) is fits


@pytest.mark.parametrize("wanted", ["any", "bios", "uefi"])
@pytest.mark.parametrize("booted", ["bios", "uefi", None])
def test_a_workflow_fits_firmware_it_names_or_any(wanted, booted):
    problem = boot_mode_mismatch(wanted, booted)
    if wanted == "any" or booted is None or booted == wanted:
        assert problem is None
    else:
        assert problem.startswith(f"the workflow needs {wanted.upper()} firmware")
        assert f"booted in {booted.upper()} mode" in problem
        assert f"boot_mode {booted} or any" in problem


@pytest.mark.parametrize(
    ("mac", "hostname"),
    [("52:54:00:C0:00:01", "node-525400c00001"), ("52-54-00-c0-00-02", "node-525400c00002")],
)
def test_a_node_without_a_hostname_is_named_after_its_mac(mac, hostname):
    assert default_hostname(mac) == hostname
