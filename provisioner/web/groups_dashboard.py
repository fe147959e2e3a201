"""The dashboard's ``/groups`` page: every machine group, in precedence order."""

from typing import Any

from flask import render_template

from provisioner.dashboard.views import bp
from provisioner.domain.groups import SELECTORS
from provisioner.domain.groups import GroupRule
from provisioner.extensions import db
from provisioner.web.groups import group_cache


def group_row(rule: GroupRule) -> dict[str, Any]:
    """A group as the page lists it: its selectors as (name, value) pairs."""
    selectors = []
    for name in SELECTORS:
        value = getattr(rule, name)
        if value:
            selectors.append((name, ",".join(value) if name == "tags" else value))
    return vars(rule) | {"selectors": selectors, "description": ""}


@bp.route("/groups")
def groups() -> str:
    """The machine groups, the one that wins first."""
    rules = sorted(group_cache().rules(db.session), key=GroupRule.precedence)
    return render_template("dashboard/groups.html", groups=[group_row(rule) for rule in rules])
