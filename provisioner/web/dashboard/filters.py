"""Jinja filters: times as people read them ("3 min ago"), durations, and metadata as JSON."""

import json
from datetime import datetime
from typing import Any

from flask import Flask

from provisioner.timeutil import as_utc
from provisioner.timeutil import duration
from provisioner.web.context import now


def ago(moment: datetime | None) -> str:
    """How long before now (the app's clock) ``moment`` was: ``just now``, ``3 min ago``."""
    if moment is None:
        return "never"
    seconds = (now() - as_utc(moment)).total_seconds()
    if seconds < 5:
        return "just now"
    return f"{duration(seconds)} ago"


def timestamp(moment: datetime | None) -> str:
    """An exact UTC time for a tooltip or a table cell."""
    return "" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    """Metadata as indented JSON."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def init_app(app: Flask) -> None:
    """Make the filters available to every template."""
    app.jinja_env.filters.update(
        ago=ago, duration=duration, timestamp=timestamp, pretty_json=pretty_json
    )
