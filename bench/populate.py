"""Fill a migrated SQLite database quickly with raw inserts (benchmarks only)."""

import hashlib
import sqlite3
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path


def mac_of(index: int) -> str:
    """A distinct locally administered MAC for node number ``index``."""
    raw = f"02{index:010x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def stamp(value: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def bench_token(index: int) -> str:
    """The report token node number ``index`` gets (its hash is stored)."""
    return f"bench-token-{index:08d}"


def add_nodes(
    database: Path, *, active: int, installing: int, installing_since: datetime, now: datetime
) -> list[str]:
    """Insert ``active`` active and ``installing`` installing nodes; return all MACs.

    Node ``i`` has MAC ``mac_of(i)`` and report token ``bench_token(i)``.
    """
    connection = sqlite3.connect(database)
    rows = []
    for index in range(active + installing):
        state = "active" if index < active else "installing"
        changed = now - timedelta(days=1) if state == "active" else installing_since
        rows.append(
            (
                str(uuid.uuid4()),
                mac_of(index),
                f"node-{index}",
                state,
                "bench-os",
                1 if state == "installing" else 0,
                0,
                stamp(now),
                stamp(now),
                stamp(now),
                stamp(changed),
                stamp(changed),
                hashlib.sha256(bench_token(index).encode()).hexdigest(),
                # Where the benchmark's requests come from, so a boot is a read, as it is
                # for a machine the server has seen before.
                "127.0.0.1",
            )
        )
    connection.executemany(
        "INSERT INTO nodes (id, mac_address, hostname, state, workflow_id, install_attempts,"
        " install_timeouts, created_at, updated_at, last_seen_at, state_changed_at,"
        " episode_started_at, report_token_hash, ip_address)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    connection.commit()
    connection.close()
    return [row[1] for row in rows]


def mark_seen(database: Path, now: datetime) -> None:
    """Set every active node's ``last_seen_at`` to ``now``, as if it had just booted.

    A boot refreshes ``last_seen_at`` at most once a minute; within that minute a repeated
    boot is a read. A benchmark that boots the same machines for longer calls this before
    each boot run, so that every run measures that read path.
    """
    connection = sqlite3.connect(database, timeout=30)
    connection.execute("UPDATE nodes SET last_seen_at = ? WHERE state = 'active'", (stamp(now),))
    connection.commit()
    connection.close()


def add_pending_nodes(database: Path, count: int, *, workflow_id: str) -> list[str]:
    """Insert ``count`` pending nodes with a workflow (a fresh episode each); return MACs."""
    now = datetime.now(UTC)
    connection = sqlite3.connect(database)
    rows = [
        (
            str(uuid.uuid4()),
            mac_of(index),
            f"node-{index}",
            "pending",
            workflow_id,
            0,
            0,
            stamp(now),
            stamp(now),
            stamp(now),
            stamp(now),
        )
        for index in range(count)
    ]
    connection.executemany(
        "INSERT INTO nodes (id, mac_address, hostname, state, workflow_id, install_attempts,"
        " install_timeouts, created_at, updated_at, state_changed_at, episode_started_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    connection.commit()
    connection.close()
    return [row[1] for row in rows]


def add_events(database: Path, macs: list[str], per_node: int, *, now: datetime) -> int:
    """Insert ``per_node`` heartbeat/progress events for each node in ``macs``; return count."""
    connection = sqlite3.connect(database)
    ids = dict(connection.execute("SELECT mac_address, id FROM nodes").fetchall())
    total = 0
    batch = []
    for mac in macs:
        node_id = ids[mac]
        for n in range(per_node):
            kind = "heartbeat" if n % 2 else "install_progress"
            when = stamp(now - timedelta(seconds=(per_node - n) * 60))
            batch.append((node_id, kind, "success", None, n % 101, "logged", when))
        if len(batch) >= 50_000:
            total += _insert_events(connection, batch)
            batch = []
    total += _insert_events(connection, batch)
    connection.commit()
    connection.close()
    return total


def _insert_events(connection: sqlite3.Connection, batch: list[tuple]) -> int:
    connection.executemany(
        "INSERT INTO node_events (node_id, event_type, status, message, progress, effect,"
        " created_at) VALUES (?,?,?,?,?,?,?)",
        batch,
    )
    return len(batch)
