"""The installed version, as ``provisioner --version``, ``/health`` and ``/metrics`` show it."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version


def _installed_version() -> str:
    try:
        return version("provisioner")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


VERSION = _installed_version()
