"""Shared fixtures: an app on each database backend, its client, its CLI runner and a clock.

Every test that uses ``app`` (or ``database_url``) runs twice: on a fresh SQLite file and on
PostgreSQL (skipped, with the reason, where no server is reachable; see databases.py).
A test tied to one backend parametrizes ``backend`` itself, e.g.
``@pytest.mark.parametrize("backend", ["sqlite"])``.
"""

import os
from collections.abc import Callable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import databases
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner
from workflowfiles import write_test_workflow

from provisioner import create_app
from provisioner.extensions import db
from provisioner.serve import close_database
from provisioner.serve import upgrade_database


class FakeClock:
    """A clock tests move by hand; starts at a fixed aware UTC instant."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> datetime:
        self.current += timedelta(**kwargs)
        return self.current


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    """A workflows directory holding one simple workflow, ``test-os``."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(
        directory,
        "test-os",
        name="Test OS",
        kernel_path="${server}/files/vmlinuz",
        initrd_path="http://mirror.example/initrd.gz",
        cmdline="console=ttyS0 node=${node_id} mac=${mac} host=${hostname}",
    )
    return directory


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated scratch PostgreSQL database for this session (dropped afterwards)."""
    admin_url, reason = databases.postgres_admin_url()
    if admin_url is None:
        pytest.skip(reason)
    url = databases.create_scratch_database(admin_url)
    try:
        application = create_app({"DATABASE_URL": url})
        upgrade_database(application)
        with application.app_context():
            db.engine.dispose()
        yield url
    finally:
        databases.drop_database(admin_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on."""
    return request.param


@pytest.fixture
def migrated_urls() -> set[str]:
    """Database URLs of this test known to be at the migration head (``build_app`` skips
    checking those once)."""
    return set()


@pytest.fixture
def database_url(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    migrated_urls: set[str],
    sqlite_template: tuple[Path, str],
) -> str:
    """An empty, migrated (PostgreSQL) or fresh (SQLite) database for this test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'provisioner.db'}"
    url = request.getfixturevalue("postgres_url")
    if databases.empty_database(url) == sqlite_template[1]:
        migrated_urls.add(url)
    return url


@pytest.fixture
def app_config(tmp_path: Path, workflows_dir: Path, clock: FakeClock, database_url: str) -> dict:
    """The settings ``app`` is built with; a test may change them before using ``app``."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "WORKFLOWS_DIR": str(workflows_dir),
        "SERVER_URL": "http://prov.test:8080",
        "CLOCK": clock,
        # Report-token rules have their own tests (test_report_auth.py); the lifecycle and
        # event tests post reports the way the "open" mode allows.
        "REPORT_AUTH": "open",
    }


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A migrated SQLite file to copy (running every migration per test cost most of the
    fast suite's time), and the revision it is at."""
    path = tmp_path_factory.mktemp("template") / "provisioner.db"
    application = create_app({"DATABASE_URL": f"sqlite:///{path}", "TESTING": True})
    upgrade_database(application)
    close_database(application)
    head = databases.migration_head(application.extensions["migrate"].directory)
    return path, head


def start_migrated(url: str, template: Path) -> bool:
    """Give a SQLite database that does not exist yet the template's migrated copy; say
    whether it did."""
    prefix = "sqlite:///"
    if url.startswith(prefix + "/") and not Path(url[len(prefix) :]).exists():
        databases.copy_sqlite(template, Path(url[len(prefix) :]))
        return True
    return False


@pytest.fixture
def build_app(
    app_config: dict,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_template: tuple[Path, str],
    migrated_urls: set[str],
) -> Iterator[Callable[..., Flask]]:
    """Build apps from ``app_config`` plus the settings a test names, each on the migrated
    database; their connections are closed at the end of the test."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    built: list[Flask] = []
    template, head = sqlite_template

    def build(**settings: object) -> Flask:
        config = app_config | settings
        if start_migrated(str(config["DATABASE_URL"]), template):
            migrated_urls.add(str(config["DATABASE_URL"]))
        application = create_app(config)
        url = application.config["SQLALCHEMY_DATABASE_URI"]
        if url in migrated_urls:
            migrated_urls.discard(url)  # checked again if the test builds another app on it
        elif databases.migrated_revision(url) != head:
            upgrade_database(application)
        built.append(application)
        return application

    yield build
    for application in built:
        close_database(application)


@pytest.fixture
def app(build_app: Callable[..., Flask]) -> Flask:
    """The application on a migrated, empty database."""
    return build_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()
