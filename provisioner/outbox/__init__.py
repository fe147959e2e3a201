"""Webhooks: the outbox rows written with each change, and their delivery."""
