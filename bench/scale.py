"""Reads at scale: a node's events page with 1,000,000 events in the table, and the stalled
feed with 100,000 nodes (1,000 of them stalled), under 64 connections."""

from datetime import timedelta
from pathlib import Path

from bench.populate import add_events
from bench.populate import add_nodes
from bench.server import ServerProcess
from bench.server import migrated_database
from bench.wrk import lua_list
from bench.wrk import run_wrk
from provisioner.timeutil import utcnow

NODES = 100_000
STALLED = 1_000
EVENT_NODES = 10_000
EVENTS_PER_NODE = 100
SECONDS = 10

EVENTS_LUA = """
math.randomseed(3)
request = function()
  return wrk.format("GET", "/api/v1/nodes/" .. macs[math.random(#macs)] .. "/events?limit=50")
end
"""
FEED_LUA = 'request = function() return wrk.format("GET", "/api/v1/nodes/stalled") end\n'
FEED_PAGE_LUA = (
    'request = function() return wrk.format("GET", "/api/v1/nodes/stalled?limit=50") end\n'
)


def run(workdir: Path) -> dict:
    # The sweeper would time the stalled nodes out during the run: keep it idle (read-only).
    database, env = migrated_database(
        workdir, "scale", INSTALL_TIMEOUT_MINUTES="60", SWEEP_INTERVAL_SECONDS="3600"
    )
    now = utcnow()
    macs = add_nodes(
        database,
        active=NODES - STALLED,
        installing=STALLED,
        installing_since=now - timedelta(hours=2),
        now=now,
    )
    events = add_events(database, macs[:EVENT_NODES], EVENTS_PER_NODE, now=now)
    events_lua = lua_list("macs", macs[:EVENT_NODES]) + EVENTS_LUA
    cases = (
        ("events_page_1", events_lua, 1),
        ("events_page_64", events_lua, 64),
        ("stalled_feed_all_1", FEED_LUA, 1),
        ("stalled_feed_page_1", FEED_PAGE_LUA, 1),
        ("stalled_feed_all_64", FEED_LUA, 64),
    )
    with ServerProcess(env, workdir, name="scale-server", threads=16) as server:
        figures = {
            name: run_wrk(
                server.url,
                script,
                workdir,
                connections=connections,
                seconds=SECONDS,
                threads=min(2, connections),
            )
            for name, script, connections in cases
        }
    return {
        "nodes": NODES,
        "events": events,
        "stalled": STALLED,
    } | figures
