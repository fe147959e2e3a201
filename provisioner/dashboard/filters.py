"""Jinja filters: times as people read them ("3 min ago"), durations, and metadata as JSON."""

import json
from datetime import datetime
from typing import Any

from flask import Flask

from provisioner.context import now
from provisioner.timeutil import as_utc


def duration(seconds: float) -> str:
    """A duration in its two largest units: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 3 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes} min"
    if hours < 24:
        rest = minutes % 60
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    rest = hours % 24
    return f"{days} d {rest} h" if rest else f"{days} d"


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
