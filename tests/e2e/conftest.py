"""Every test under tests/e2e is an end-to-end test: marked ``e2e`` whatever its module says,
so ``-m "not e2e"`` (make test-fast) leaves them all out."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
