"""Compatibility shim: the WSGI entry point is ``provisioner.wsgi:app`` (installed too)."""

from provisioner.wsgi import app  # noqa: F401
