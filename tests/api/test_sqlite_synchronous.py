"""``SQLITE_SYNCHRONOUS``: how SQLite commits reach the disk, checked on the connections
themselves (``PRAGMA synchronous``: 1 is NORMAL, 2 is FULL)."""

import pytest
from sqlalchemy import text

from provisioner.config import ConfigError
from provisioner.config import load_settings
from provisioner.extensions import db
from provisioner.store.group_commit import EXTENSION_KEY
from provisioner.store.transactions import write_transaction

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
NORMAL, FULL = 1, 2


def synchronous_of(app) -> tuple[int, int, int]:
    """PRAGMA synchronous on a read, in a write transaction, and in the group writer."""
    with app.app_context():
        read = db.session.scalar(text("PRAGMA synchronous"))
        db.session.rollback()
        with write_transaction(db.session) as session:
            written = session.scalar(text("PRAGMA synchronous"))
        grouped = app.extensions[EXTENSION_KEY].submit(
            lambda session: session.scalar(text("PRAGMA synchronous"))
        )
    return read, written, grouped


@SQLITE
def test_normal_is_the_default(app):
    assert app.config["SQLITE_SYNCHRONOUS"] == "normal"
    assert synchronous_of(app) == (NORMAL, NORMAL, NORMAL)


@SQLITE
def test_full_makes_every_connection_sync_each_commit(build_app):
    app = build_app(SQLITE_SYNCHRONOUS="full")
    assert synchronous_of(app) == (FULL, FULL, FULL)


@pytest.mark.parametrize(("value", "expected"), [("FULL", "full"), (" normal ", "normal")])
def test_the_environment_may_set_it(value, expected):
    environ = {"PROVISIONER_SQLITE_SYNCHRONOUS": value}
    assert load_settings("/nonexistent", environ=environ)["SQLITE_SYNCHRONOUS"] == expected


@pytest.mark.parametrize("value", ["off", "extra", "2", ""])
def test_other_values_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match='SQLITE_SYNCHRONOUS: expected "normal" or "full"'):
        load_settings("/nonexistent", environ={"PROVISIONER_SQLITE_SYNCHRONOUS": value})
