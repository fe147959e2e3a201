"""Machine groups: which group a machine belongs to, and why. Pure functions, no Flask/SQL.

A group's selectors (``mac_prefix``, ``tags``, ``architecture``, ``platform``,
``manufacturer``, ``product``, ``serial``, ``uuid``) must *all* match; a selector left
empty matches anything, so a group with none is a catch-all. Of the groups that match,
one wins, by:

1. the highest ``priority``;
2. then the most specific: the most selectors set (each tag counts as one), and a longer
   ``mac_prefix`` before a shorter one;
3. then the name, alphabetically (so the answer never depends on the database's order).

Only the winner applies: its ``workflow_id`` (used when the node has none of its own: an
explicit node workflow always wins), its ``variables`` and its ``auto_install``.
"""

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from fnmatch import fnmatchcase
from typing import Any

from provisioner.domain.hardware import BOOT_MODE_PLATFORMS
from provisioner.domain.hardware import normalize_arch

#: Selectors compared as case-insensitive glob patterns (``*``, ``?``, ``[...]``).
GLOB_SELECTORS = ("manufacturer", "product", "serial", "uuid")
SELECTORS = ("mac_prefix", "tags", "architecture", "platform", *GLOB_SELECTORS)


@dataclass(frozen=True)
class Facts:
    """What is known about a machine: its MAC, tags and what iPXE reported."""

    mac: str
    tags: frozenset[str] = frozenset()
    arch: str | None = None
    platform: str | None = None  # iPXE's word: pcbios or efi
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    uuid: str | None = None

    @classmethod
    def of_node(cls, node: Any, tags: Iterable[str] = ()) -> "Facts":
        """The facts a node (an ORM object or a row) has stored."""
        return cls(
            mac=node.mac_address,
            tags=frozenset(tags),
            arch=node.arch,
            platform=BOOT_MODE_PLATFORMS.get(node.boot_mode or ""),
            manufacturer=node.vendor,
            product=node.model,
            serial=node.serial_number,
            uuid=node.system_uuid,
        )


@dataclass(frozen=True)
class GroupRule:
    """A group as matching sees it (a copy of its row: safe to cache and share)."""

    name: str
    priority: int = 0
    mac_prefix: str | None = None
    tags: tuple[str, ...] = ()
    architecture: str | None = None
    platform: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    uuid: str | None = None
    workflow_id: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    auto_install: bool = False

    @property
    def specificity(self) -> int:
        """How many selectors are set; each tag counts as one."""
        count = len(self.tags)
        for name in SELECTORS:
            if name != "tags" and getattr(self, name):
                count += 1
        return count

    def precedence(self) -> tuple[int, int, int, str]:
        """Sort key: the group that should win sorts first."""
        return (-self.priority, -self.specificity, -len(self.mac_prefix or ""), self.name)


def rule_of(group: Any) -> GroupRule:
    """The immutable matching view of a group row (``models.MachineGroup``)."""
    return GroupRule(
        name=group.name,
        priority=group.priority,
        mac_prefix=group.mac_prefix,
        tags=tuple(group.tags or ()),
        architecture=group.architecture,
        platform=group.platform,
        manufacturer=group.manufacturer,
        product=group.product,
        serial=group.serial,
        uuid=group.uuid,
        workflow_id=group.workflow_id,
        variables=dict(group.variables or {}),
        auto_install=bool(group.auto_install),
    )


@dataclass(frozen=True)
class Check:
    """One selector of one group against one machine."""

    selector: str
    wanted: str
    got: str | None
    ok: bool


@dataclass(frozen=True)
class Candidate:
    """A group and how each of its selectors compared."""

    group: GroupRule
    checks: tuple[Check, ...]

    @property
    def matches(self) -> bool:
        return all(check.ok for check in self.checks)

    def why(self) -> str:
        """One line: what matched, or the first selector that did not."""
        if not self.checks:
            return "no selectors: matches every machine"
        failed = [check for check in self.checks if not check.ok]
        if failed:
            check = failed[0]
            got = "nothing reported" if check.got is None else repr(check.got)
            return f"{check.selector} {check.wanted!r} does not match ({got})"
        return "matches: " + ", ".join(f"{c.selector} {c.wanted!r}" for c in self.checks)


@dataclass(frozen=True)
class Resolution:
    """Which group won (or none), and every group in precedence order with its checks."""

    group: GroupRule | None
    candidates: tuple[Candidate, ...]


def checks(rule: GroupRule, facts: Facts) -> tuple[Check, ...]:
    """Each selector ``rule`` sets, compared with ``facts``."""
    found: list[Check] = []
    if rule.mac_prefix:
        ok = facts.mac.lower().startswith(rule.mac_prefix.lower())
        found.append(Check("mac_prefix", rule.mac_prefix, facts.mac, ok))
    for tag in rule.tags:
        have = ",".join(sorted(facts.tags)) or None
        found.append(Check("tag", tag, have, tag in facts.tags))
    if rule.architecture:
        ok = facts.arch is not None and normalize_arch(rule.architecture) == normalize_arch(
            facts.arch
        )
        found.append(Check("architecture", rule.architecture, facts.arch, ok))
    if rule.platform:
        ok = (facts.platform or "").lower() == rule.platform.lower()
        found.append(Check("platform", rule.platform, facts.platform, ok))
    for name in GLOB_SELECTORS:
        pattern = getattr(rule, name)
        if pattern:
            value = getattr(facts, name)
            ok = value is not None and fnmatchcase(value.lower(), pattern.lower())
            found.append(Check(name, pattern, value, ok))
    return tuple(found)


def resolve(rules: Iterable[GroupRule], facts: Facts) -> Resolution:
    """The winning group for ``facts`` (see the module's docstring), with the reasons."""
    ordered = sorted(rules, key=GroupRule.precedence)
    candidates = tuple(Candidate(rule, checks(rule, facts)) for rule in ordered)
    winner = next((c.group for c in candidates if c.matches), None)
    return Resolution(winner, candidates)


def winning_group(rules: Iterable[GroupRule], facts: Facts) -> GroupRule | None:
    """Just the winner of ``resolve``."""
    return resolve(rules, facts).group


@dataclass(frozen=True)
class WorkflowChoice:
    """The workflow a node installs, and where it comes from (``node``, ``group`` or None)."""

    workflow_id: str | None
    source: str | None
    group: str | None = None


def effective_workflow(node_workflow_id: str | None, group: GroupRule | None) -> WorkflowChoice:
    """An explicit node workflow wins; else the winning group's; else none."""
    if node_workflow_id:
        return WorkflowChoice(node_workflow_id, "node", group.name if group else None)
    if group is not None and group.workflow_id:
        return WorkflowChoice(group.workflow_id, "group", group.name)
    return WorkflowChoice(None, None, group.name if group else None)


def facts_with(base: Facts, **given: Any) -> Facts:
    """``base`` with the facts in ``given`` that are not None (a dry-run's overrides)."""
    changes = {key: value for key, value in given.items() if value is not None}
    if "tags" in changes:
        changes["tags"] = frozenset(changes["tags"])
    return Facts(**{**vars(base), **changes})


def dry_run(
    rules: Iterable[GroupRule],
    facts: Facts,
    *,
    node_id: str | None,
    node_workflow_id: str | None,
) -> dict[str, Any]:
    """What a machine with ``facts`` would get, and why, as the dry-run endpoint says it."""
    resolution = resolve(rules, facts)
    winner = resolution.group
    choice = effective_workflow(node_workflow_id, winner)
    if winner is None:
        why = "no group matches" if resolution.candidates else "there are no groups"
    else:
        why = next(c for c in resolution.candidates if c.group is winner).why()
        beaten = [c.group.name for c in resolution.candidates if c.matches][1:]
        why = f"group {winner.name} (priority {winner.priority}, specificity " + (
            f"{winner.specificity}): {why}"
        )
        if beaten:
            why += f"; it comes before {', '.join(beaten)}, which also match"
    if choice.source == "node" and winner is not None and winner.workflow_id:
        why += f"; the node's own workflow {node_workflow_id} wins over the group's"
    return {
        "mac": facts.mac,
        "known_node": node_id,
        "facts": {
            "tags": sorted(facts.tags),
            "arch": facts.arch,
            "platform": facts.platform,
            "manufacturer": facts.manufacturer,
            "product": facts.product,
            "serial": facts.serial,
            "uuid": facts.uuid,
        },
        "group": winner.name if winner else None,
        "why": why,
        "workflow_id": choice.workflow_id,
        "workflow_source": choice.source,
        "variables": dict(winner.variables) if winner else {},
        "auto_install": bool(winner and winner.auto_install and node_id is None),
        "candidates": [
            {
                "name": c.group.name,
                "priority": c.group.priority,
                "specificity": c.group.specificity,
                "matches": c.matches,
                "why": c.why(),
                "checks": [vars(check) for check in c.checks],
            }
            for c in resolution.candidates
        ],
    }
