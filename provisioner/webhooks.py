"""Webhooks: an outbox written in the same transaction as the change, delivered later."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the outbox writer and the delivery job (filled in by the webhooks work)."""
