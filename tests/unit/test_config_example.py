"""``config.example.toml``: every commented sample in it loads when uncommented as written."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from paths import REPO_ROOT

from provisioner.cli import main
from provisioner.config import DEFAULTS
from provisioner.config import load_settings

EXAMPLE = REPO_ROOT / "config.example.toml"
#: A commented line that is TOML, not prose: a table header or a ``key = value``.
SAMPLE_LINE = re.compile(r"^# (\[\[[A-Z_]+\]\]|[A-Za-z_]+ = )")


def sample_blocks(lines: list[str]) -> list[range]:
    """Line ranges of the runs of consecutive commented TOML lines (one sample each)."""
    blocks: list[range] = []
    start = None
    for number, line in enumerate([*lines, ""]):
        if SAMPLE_LINE.match(line):
            start = number if start is None else start
        elif start is not None:
            blocks.append(range(start, number))
            start = None
    return blocks


LINES = EXAMPLE.read_text().splitlines()
BLOCKS = sample_blocks(LINES)


def uncomment(lines: list[str], *blocks: range) -> list[str]:
    """``lines`` with the given blocks' ``# `` taken off, the way an operator edits."""
    chosen = {number for block in blocks for number in block}
    return [line[2:] if number in chosen else line for number, line in enumerate(lines)]


def load(tmp_path: Path, lines: list[str]) -> dict:
    """Load ``lines`` as a config file, as the server does."""
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_settings(str(tmp_path), environ={"PROVISIONER_CONFIG": str(path)})


def test_example_has_a_sample_for_every_key():
    """Each key is shown as a commented sample (so it can be uncommented)."""
    sampled = {LINES[block[0]][2:].split(" ", 1)[0] for block in BLOCKS}
    sampled |= {LINES[n][2:].split(" ", 1)[0] for block in BLOCKS for n in block}
    assert set(DEFAULTS) - {"WEBHOOKS"} <= sampled
    assert "[[WEBHOOKS]]" in sampled


def test_example_as_shipped_loads_the_defaults(tmp_path):
    """Nothing is set uncommented: the file as shipped gives the defaults."""
    settings = load(tmp_path, LINES)
    assert {key: settings[key] for key in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("block", BLOCKS, ids=[LINES[block[0]][2:40] for block in BLOCKS])
def test_each_sample_loads_uncommented(tmp_path, block):
    """Uncommenting one sample gives a file that loads, with the sample's values."""
    settings = load(tmp_path, uncomment(LINES, block))
    first = LINES[block[0]][2:]
    if first == "[[WEBHOOKS]]":
        assert settings["WEBHOOKS"][0]["url"] == "https://hooks.example/provisioner"
    else:
        key = first.split(" ", 1)[0]
        assert settings["CONFIG_FILE"] and key in settings


def test_token_new_line_pasted_into_the_example_loads(tmp_path):
    """The line ``provisioner token new`` prints, pasted under its sample, enables the token;
    a webhook uncommented at the end of the file still loads beside it."""
    printed = CliRunner().invoke(main, ["token", "new"]).output.splitlines()
    config_line = printed[-1]
    assert config_line.startswith("API_TOKENS = ")
    lines = list(LINES)
    below = next(n for n, line in enumerate(lines) if line.startswith("# API_TOKENS = "))
    lines.insert(below + 1, config_line)
    webhooks = next(b for b in sample_blocks(lines) if lines[b[0]] == "# [[WEBHOOKS]]")

    settings = load(tmp_path, uncomment(lines, webhooks))

    assert settings["API_TOKENS"] == [config_line.split('"')[1]]
    assert settings["WEBHOOKS"][0]["events"] == ["install_failed", "install_timeout"]
