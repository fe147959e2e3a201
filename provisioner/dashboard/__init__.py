"""The web dashboard: server-rendered pages for operators."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the dashboard pages (filled in by the dashboard work)."""
