"""Lifecycle and provisioning rules: no Flask, no SQL text."""
