"""Machine groups in the database, and each process's cache of them.

Every write to ``machine_groups`` increments the one row of ``machine_groups_version`` in
the same transaction. ``GroupCache.rules`` reads that counter (one primary-key read) and
reloads the groups only when it moved, so every instance sharing the database sees a
change at its next lookup, and a lookup costs one tiny query. Boots that need no group
(a known machine booting its disk: most of them) never ask.
"""

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any
from typing import Generic
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.models import MachineGroup
from provisioner.models import MachineGroupsVersion

VERSION_ROW = 1
#: The group fields an operator sets (the API schema's load keys).
FIELDS = (
    "description",
    "priority",
    "mac_prefix",
    "tags",
    "architecture",
    "platform",
    "manufacturer",
    "product",
    "serial",
    "uuid",
    "workflow_id",
    "variables",
    "auto_install",
)


def all_groups(session: Session | scoped_session[Session]) -> list[MachineGroup]:
    """Every group, by name."""
    return list(session.scalars(select(MachineGroup).order_by(MachineGroup.name)))


def find_group(
    session: Session | scoped_session[Session], name: str, *, for_update: bool = False
) -> MachineGroup | None:
    """The group called ``name``."""
    query = select(MachineGroup).where(MachineGroup.name == name)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def bump_version(session: Session | scoped_session[Session]) -> None:
    """Tell every instance's cache that the groups changed (in the caller's transaction)."""
    result = session.execute(
        update(MachineGroupsVersion)
        .where(MachineGroupsVersion.id == VERSION_ROW)
        .values(version=MachineGroupsVersion.version + 1)
    )
    if result.rowcount == 0:
        session.add(MachineGroupsVersion(id=VERSION_ROW, version=1))


def add_group(
    session: Session | scoped_session[Session], name: str, fields: dict[str, Any], now: datetime
) -> MachineGroup:
    """Insert a group (the caller checked the name is free)."""
    group = MachineGroup(name=name, created_at=now, updated_at=now)
    set_fields(group, {"description": "", "priority": 0, "auto_install": False} | fields, now)
    session.add(group)
    bump_version(session)
    session.flush()
    return group


def set_fields(group: MachineGroup, fields: dict[str, Any], now: datetime) -> None:
    """Change the fields given; the caller bumps the version (``change_group``)."""
    for key, value in fields.items():
        if key in FIELDS:
            setattr(group, key, value)
    group.updated_at = now


def change_group(
    session: Session | scoped_session[Session],
    group: MachineGroup,
    fields: dict[str, Any],
    now: datetime,
) -> MachineGroup:
    """Update a group's fields."""
    set_fields(group, fields, now)
    bump_version(session)
    return group


def delete_group(session: Session | scoped_session[Session], group: MachineGroup) -> None:
    """Remove a group."""
    session.delete(group)
    bump_version(session)


Rule = TypeVar("Rule")


class GroupCache(Generic[Rule]):
    """The groups, each turned into a ``Rule`` by ``convert`` (the domain's immutable view,
    ``domain.groups.rule_of``), reloaded when the version counter moves."""

    def __init__(self, convert: Callable[[MachineGroup], Rule]) -> None:
        self._convert = convert
        self._version: int | None = None
        self._rules: tuple[Rule, ...] = ()
        self._lock = threading.Lock()
        self.reloads = 0

    def rules(self, session: Session | scoped_session[Session]) -> tuple[Rule, ...]:
        """The current groups: one counter read, plus a reload when they changed."""
        version = session.scalar(
            select(MachineGroupsVersion.version).where(MachineGroupsVersion.id == VERSION_ROW)
        )
        if version is not None and version == self._version:
            return self._rules
        rules = tuple(self._convert(group) for group in all_groups(session))
        with self._lock:
            self._version, self._rules = version, rules
            self.reloads += 1
        return rules
