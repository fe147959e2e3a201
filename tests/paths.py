"""Where things are in the checkout, for tests at any depth under tests/."""

from pathlib import Path

#: The repository's root directory (the one holding pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: tests/ itself: helper scripts (qemu/, clients/) live here.
TESTS_DIR = REPO_ROOT / "tests"
EXAMPLE_WORKFLOWS = REPO_ROOT / "examples" / "workflows"
