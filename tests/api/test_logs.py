"""Logging: the access log (tokens redacted), one line per boot, the JSON format, and the
server's format surviving the migrations it runs at start."""

import json
import logging
import re
from pathlib import Path

import pytest
from serverproc import start_server

from provisioner.logs import JsonFormatter
from provisioner.logs import UtcFormatter
from provisioner.logs import redact_query

MAC = "52:54:00:10:90:01"
SECRET = "s3cr3t-report-token-value"


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


def test_access_log_is_off_unless_asked_for(client, caplog):
    """Without ``ACCESS_LOG`` requests leave no access-log line (boots still log theirs)."""
    caplog.set_level(logging.INFO, logger="provisioner")
    client.get("/api/v1/nodes")
    assert messages(caplog, "provisioner.access") == []


def test_access_log_has_one_line_per_request_with_tokens_redacted(build_app, caplog):
    """Method, path, status and time are logged; a ``?token=`` value never is."""
    client = build_app(ACCESS_LOG=True).test_client()
    caplog.set_level(logging.INFO, logger="provisioner")
    client.get(f"/api/v1/nodes/{MAC}/config/preseed.cfg?token={SECRET}&x=1")
    client.get("/api/v1/nodes", headers={"Authorization": f"Bearer {SECRET}"})
    client.get(f"/api/v1/nodes/{MAC}/seed/{SECRET}/user-data")

    lines = messages(caplog, "provisioner.access")
    assert len(lines) == 3, lines
    assert f'"GET /api/v1/nodes/{MAC}/seed/REDACTED/user-data" 4' in lines[2]
    assert re.search(
        r'"GET /api/v1/nodes/[^ ]+/config/preseed.cfg\?token=REDACTED&x=1" 4\d\d ', lines[0]
    )
    assert '"GET /api/v1/nodes" 200 ' in lines[1]
    assert all(re.search(r" [\d.]+ms$", line) for line in lines)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("mac=52:54:00:00:00:01&token=abc", "mac=52:54:00:00:00:01&token=REDACTED"),
        ("X-Report-Token=abc&api_key=def", "X-Report-Token=REDACTED&api_key=REDACTED"),
        ("secret=1&password=2&q=web", "secret=REDACTED&password=REDACTED&q=web"),
        ("", ""),
    ],
)
def test_redact_query(query, expected):
    assert redact_query(query) == expected


def test_each_boot_logs_the_mac_the_state_and_what_was_served(client, caplog):
    """Registration, an installer, and the local boot after it: one line each."""
    caplog.set_level(logging.INFO, logger="provisioner")
    client.get(f"/api/v1/boot?mac={MAC}")
    client.patch(f"/api/v1/nodes/{MAC}", json={"workflow_id": "test-os"})
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "pending"})
    client.get(f"/api/v1/boot?mac={MAC}")
    client.get(f"/api/v1/boot?mac={MAC}")

    assert messages(caplog, "provisioner.domain.booting") == [
        f"boot {MAC}: discovered, served local boot (registered)",
        f"boot {MAC}: installing, served installer test-os (attempt 1)",
        f"boot {MAC}: installing, served local boot",
    ]


def record(**extra: object) -> logging.LogRecord:
    entry = logging.makeLogRecord({"name": "provisioner.domain.booting", "levelname": "INFO"})
    entry.msg, entry.args = "boot %s", (MAC,)
    entry.__dict__.update(extra)
    return entry


def test_json_format_is_one_object_per_line_with_the_fields():
    """ts (UTC, Z), level, logger, msg and the extra fields a shipper can index."""
    line = JsonFormatter().format(record(mac=MAC, served="local boot"))
    entry = json.loads(line)
    assert "\n" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert entry | {"ts": None} == {
        "ts": None,
        "level": "INFO",
        "logger": "provisioner.domain.booting",
        "msg": f"boot {MAC}",
        "mac": MAC,
        "served": "local boot",
    }


def test_text_format_stamps_utc_time():
    line = UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record())
    assert re.fullmatch(rf"\S+Z INFO provisioner.domain.booting: boot {MAC}", line)


#: A text log line as ``provisioner serve`` writes it.
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) \S+: ")


@pytest.mark.e2e
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_server_log_keeps_its_format_after_migrating(tmp_path: Path, log_format: str):
    """``serve`` migrates a fresh database in-process, then still logs in its own format
    (alembic.ini's logging config used to replace it: no timestamps)."""
    with start_server(tmp_path, LOG_FORMAT=log_format, ACCESS_LOG=True) as server:
        assert server.get(f"/api/v1/boot?mac={MAC}").status == 200
        assert server.get(f"/api/v1/nodes/{MAC}/config/x?token={SECRET}").status >= 400
        server.stop()
        log = server.log_text()

    lines = [line for line in log.splitlines() if "provisioner.access" in line]
    assert len(lines) >= 2, log[-3000:]
    boots = [line for line in log.splitlines() if f"boot {MAC}" in line]
    assert len(boots) == 1, log[-3000:]
    if log_format == "text":
        assert all(TEXT_LINE.match(line) for line in lines + boots), log[-3000:]
    else:
        entries = [json.loads(line) for line in lines + boots]
        assert entries[-1]["mac"] == MAC and entries[-1]["state"] == "discovered"
        assert {entry["logger"] for entry in entries} == {
            "provisioner.access",
            "provisioner.domain.booting",
        }
    assert "Running upgrade" in log  # the migrations did run in this process
    assert SECRET not in log
