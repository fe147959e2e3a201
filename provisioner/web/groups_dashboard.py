"""The dashboard's ``/groups`` page: every machine group, in precedence order."""

from typing import Any

from flask import render_template

from provisioner.domain.groups import SELECTORS
from provisioner.domain.groups import rule_of
from provisioner.extensions import db
from provisioner.models import MachineGroup
from provisioner.store import groups as store
from provisioner.web.dashboard.views import bp


def group_row(group: MachineGroup) -> dict[str, Any]:
    """A group as the page lists it: its selectors as (name, value) pairs."""
    rule = rule_of(group)
    selectors = []
    for name in SELECTORS:
        value = getattr(rule, name)
        if value:
            selectors.append((name, ",".join(value) if name == "tags" else value))
    return vars(rule) | {"selectors": selectors, "description": group.description}


@bp.route("/groups")
def groups() -> str:
    """The machine groups, the one that wins first."""
    rows = sorted(store.all_groups(db.session), key=lambda group: rule_of(group).precedence())
    return render_template("dashboard/groups.html", groups=[group_row(group) for group in rows])
