"""Unit tests stay pure: a test here that asks for the app, a client or a database fails at
collection (move it to tests/api, or test the function the endpoint calls)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent
#: The fixtures of tests/conftest.py that build an app or open a database.
NOT_UNIT = {"app", "client", "runner", "build_app", "database_url", "postgres_url", "backend"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        used = NOT_UNIT.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(
                f"{item.nodeid} is in tests/unit but uses {', '.join(sorted(used))}"
            )
