"""Driving a server with wrk (Debian package) and a Lua script; figures come back as JSON."""

import json
import shutil
import subprocess
from pathlib import Path

DONE = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    '\\nWRK_JSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.2f,'
    .. ' "p99_ms": %.2f, "max_ms": %.2f, "errors": %d, "non_2xx": %d}\\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors, summary.errors.status))
end
"""


def lua_list(name: str, values: list[str]) -> str:
    """A Lua table literal of strings."""
    return f"{name} = {{" + ",".join(json.dumps(value) for value in values) + "}\n"


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench-deps does)")
    return path


def run_wrk(
    url: str, script: str, workdir: Path, *, connections: int, seconds: float, threads: int = 2
) -> dict:
    """Run wrk against ``url`` with the Lua ``script`` (plus the JSON ``done``) and parse it."""
    lua = workdir / "scenario.lua"
    lua.write_text(script + DONE)
    completed = subprocess.run(
        [
            require_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON ") :])
    raise RuntimeError(f"wrk printed no figures:\n{completed.stdout}\n{completed.stderr}")
