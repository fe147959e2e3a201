"""End to end: ``provisioner serve`` when the database's disk fills up, and after room is made.

The database lives on a small tmpfs mounted for the test: the SQLite file itself, or a
PostgreSQL tablespace holding the test's database (PostgreSQL runs on this host). A filler
file then takes every free byte. Writes must answer 503 with a JSON error naming the cause
(installers retry), the boot endpoint an iPXE script that boots the local disk, ``/health``
must say the database is not writable, and nothing acknowledged may be lost. Once the filler
is deleted, writes succeed again without a restart.
"""

import errno
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import databases
import dbcheck
import pytest
import sqlalchemy as sa
from serverproc import ServerProcess
from serverproc import start_server
from sqlalchemy.engine import make_url
from workflowfiles import write_test_workflow

from provisioner.version import VERSION

pytestmark = pytest.mark.e2e

#: SQLite needs little; a PostgreSQL database starts as a copy of template1 (about 8 MB).
DISK_SIZES = {"sqlite": "4m", "postgresql": "32m"}
WORKFLOW_ID = "full-os"
NODES = 4
#: Reports sent on a full disk before giving up on seeing it refused (each adds a few KiB).
MAX_REPORTS_UNTIL_FULL = 2000
MAX_BOOTS_UNTIL_FULL = 200
CONCURRENT_REPORTS = 8
STORAGE_FULL = "Database storage is full; nothing was written, retry later"


def mac_of(number: int) -> str:
    return f"52:54:00:df:00:{number:02x}"


@dataclass
class SmallDisk:
    """A small tmpfs and a file that can take all its free space."""

    path: Path
    filler: Path = field(init=False)

    def __post_init__(self) -> None:
        self.filler = self.path / "filler"

    def fill(self) -> None:
        """Write zeros until the file system refuses more (tmpfs counts whole pages)."""
        chunk = b"\0" * 4096
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(descriptor, chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self.filler.unlink()


def mount_small_disk(where: Path, size: str) -> SmallDisk:
    where.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command to make a small file system")
    if result.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    return SmallDisk(where)


def unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True, timeout=30)


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(directory, WORKFLOW_ID)
    return directory


@pytest.fixture
def sqlite_on_small_disk(tmp_path: Path) -> Iterator[tuple[str, SmallDisk]]:
    disk = mount_small_disk(tmp_path / "small", DISK_SIZES["sqlite"])
    try:
        yield f"sqlite:///{disk.path / 'provisioner.db'}", disk
    finally:
        unmount(disk.path)


@pytest.fixture
def postgresql_on_small_disk() -> Iterator[tuple[str, SmallDisk]]:
    """A database of its own whose tablespace is on the small disk.

    The server must run on this host, as an OS user the test can hand the folder to.
    """
    admin_url, reason = databases.postgres_admin_url()
    if admin_url is None:
        pytest.skip(reason)
    if make_url(admin_url).host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("PostgreSQL is not on this host: a tablespace needs a local folder")
    name = f"provisioner_full_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            owner = postgres_owner(connection)
            # A folder PostgreSQL can reach (pytest's tmp_path is private to its user).
            disk = mount_small_disk(Path("/tmp") / name, DISK_SIZES["postgresql"])
            try:
                location = disk.path / "tablespace"
                location.mkdir()
                os.chown(location, owner.st_uid, owner.st_gid)
                with database_in_tablespace(connection, admin_url, name, location) as url:
                    yield url, disk
            finally:
                unmount(disk.path)
                disk.path.rmdir()
    finally:
        admin.dispose()


def postgres_owner(connection: sa.Connection) -> os.stat_result:
    """The owner of PostgreSQL's data directory, which its tablespaces need too."""
    try:
        directory = connection.scalar(sa.text("SELECT current_setting('data_directory')"))
        return os.stat(directory)
    except (sa.exc.DBAPIError, OSError) as exc:
        pytest.skip(f"PostgreSQL's data directory is not readable from here: {exc}")


@contextmanager
def database_in_tablespace(
    connection: sa.Connection, admin_url: str, name: str, location: Path
) -> Iterator[str]:
    """Make tablespace and database ``name`` at ``location``; drop both afterwards."""
    try:
        connection.execute(sa.text(f"CREATE TABLESPACE {name} LOCATION '{location}'"))
    except sa.exc.DBAPIError as exc:
        pytest.skip(f"PostgreSQL cannot use a tablespace on the small disk: {exc.orig}")
    try:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TABLESPACE {name}'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f"DROP TABLESPACE IF EXISTS {name}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def small_database(request: pytest.FixtureRequest) -> tuple[str, SmallDisk]:
    """A database URL whose storage is a small disk, on each backend."""
    return request.getfixturevalue(f"{request.param}_on_small_disk")


class Reports:
    """Reports sent with an ``event_id`` each, and which of them were acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.acknowledged: set[str] = set()
        self.refused: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.count = 0

    def send(self, number: int, body: dict[str, Any] | None = None) -> int:
        """Send one report for node ``number``; return its status."""
        with self.lock:
            self.count += 1
            event_id = f"report-{self.count}"
        body = body or {
            "mac_address": mac_of(number % NODES),
            "event": "install_progress",
            "progress": self.count % 100,
            "message": "x" * 4000,  # fills the disk sooner
            "event_id": event_id,
        }
        answer = self.server.post_json("/api/v1/report", body)
        with self.lock:
            if answer.status == 200:
                self.acknowledged.add(body["event_id"])
            elif answer.status == 503:
                self.refused.append(body)
        assert answer.status in (200, 503), answer
        if answer.status == 503:
            assert answer.content_type == "application/json", answer
            assert answer.body["message"] == STORAGE_FULL
            assert answer.body["cause"] == "storage_full"
        return answer.status

    def retry_refused(self) -> None:
        refused, self.refused = self.refused, []
        for body in refused:
            assert self.send(0, body) == 200


def prepare_installing_nodes(server: ServerProcess) -> None:
    for number in range(NODES):
        mac = mac_of(number)
        body = {"mac_address": mac, "workflow_id": WORKFLOW_ID}
        assert server.post_json("/api/v1/nodes", body).status == 201
        assert server.patch_json(f"/api/v1/nodes/{mac}/state", {"state": "pending"}).status == 200
        assert "kernel " in server.get(f"/api/v1/boot?mac={mac}").text


def assert_local_boot_because_full(answer: Any) -> None:
    assert answer.status == 200, answer
    assert answer.content_type == "text/plain"
    lines = answer.text.splitlines()
    assert lines[0] == "#!ipxe"
    assert "# provisioner: database storage is full; booting the local disk" in lines
    assert lines[-1] == "exit"


def boot_new_machines_until_refused(server: ServerProcess) -> str:
    """Boot unknown machines (each one a write) until one cannot be registered; check its
    script and return its MAC. PostgreSQL may still find room in a page for a few."""
    for number in range(MAX_BOOTS_UNTIL_FULL):
        mac = f"52:54:00:df:01:{number:02x}"
        answer = server.get(f"/api/v1/boot?mac={mac}")
        if "registered" not in answer.text:
            assert_local_boot_because_full(answer)
            return mac
    raise AssertionError(f"{MAX_BOOTS_UNTIL_FULL} machines registered on a full disk")


def test_a_full_disk_refuses_writes_cleanly_and_recovers(
    tmp_path: Path, workflows_dir: Path, small_database: tuple[str, SmallDisk]
):
    url, disk = small_database
    with start_server(
        tmp_path, database_url=url, WORKFLOWS_DIR=workflows_dir, REPORT_AUTH="open"
    ) as server:
        prepare_installing_nodes(server)
        reports = Reports(server)
        for number in range(NODES):
            assert reports.send(number) == 200

        disk.fill()
        sent = 0
        while not reports.refused and sent < MAX_REPORTS_UNTIL_FULL:
            reports.send(sent)
            sent += 1
        assert reports.refused, f"{sent} reports on a full disk were all accepted"

        health = server.get("/health")
        assert health.status == 503, health
        assert health.body == {
            "status": "unavailable",
            "database": "not writable: storage full",
            "version": VERSION,
        }
        new_mac = boot_new_machines_until_refused(server)
        with ThreadPoolExecutor(CONCURRENT_REPORTS) as pool:
            statuses = list(pool.map(reports.send, range(CONCURRENT_REPORTS)))
        if url.startswith("sqlite"):  # PostgreSQL may still find room in a page for some
            assert statuses == [503] * CONCURRENT_REPORTS

        disk.free()
        assert server.get("/health").body == {"status": "ok", "database": "ok", "version": VERSION}
        reports.retry_refused()
        assert "registered" in server.get(f"/api/v1/boot?mac={new_mac}").text
        assert "Traceback" not in server.log_text()

    stored = dbcheck.rows(
        url, "SELECT client_event_id FROM node_events WHERE client_event_id <> ''"
    )
    assert sorted(event_id for (event_id,) in stored) == sorted(reports.acknowledged)
