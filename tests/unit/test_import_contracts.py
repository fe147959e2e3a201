"""The import contracts of pyproject.toml ([tool.importlinter]) hold: imports point down
the layers (web -> domain -> store -> models) and the domain imports no Flask."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept():
    # In a process of its own: import-linter imports every module and would leave the
    # logging configuration of this one changed for the tests that follow.
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
