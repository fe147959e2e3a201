"""The import contracts of pyproject.toml ([tool.importlinter]) hold: imports point down
the layers (web -> domain -> store -> models) and the domain imports no Flask."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)  # lint-imports reads the contracts from ./pyproject.toml
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
