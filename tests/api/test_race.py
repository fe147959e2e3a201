"""The race of a stalled install: the sweeper, a boot and ``install_complete`` at once.

Whoever gets there first decides; the others must find the node moved and write nothing, so
a timeout is counted once and never applied on top of a completion (issue 4).

The deterministic tests give each contender its own SQLAlchemy session: the loser reads the
installing node, the winner commits its change through the real entry point, then the loser
acts on what it read. ``transition()``'s guarded update must reject it. A threaded stress test
then lets the real sweep job, ``GET /api/v1/boot`` and ``POST /api/v1/report`` collide.
"""

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from provisioner.domain import sweeper
from provisioner.domain.booting import BootRequest
from provisioner.domain.booting import BootSettings
from provisioner.domain.booting import answer_boot
from provisioner.domain.events import EventType
from provisioner.domain.lifecycle import ConcurrentTransition
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.reports import Report
from provisioner.domain.reports import apply_report
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import handle_stall
from provisioner.domain.sweeper import stall_of
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.models import NodeStateLog
from provisioner.scheduler import run_sweep
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction
from provisioner.web.context import single_reads

TIMEOUT_MINUTES = 30
MAX_ATTEMPTS = 3
MAC = "52:54:00:ac:e0:01"
OTHER_MAC = "52:54:00:ac:e0:02"
WORKFLOW_ID = "test-os"
INSTALL_COMPLETE = Report(event_type=EventType.INSTALL_COMPLETE, message="done")


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config["INSTALL_TIMEOUT_MINUTES"] = TIMEOUT_MINUTES
    app_config["MAX_INSTALL_ATTEMPTS"] = MAX_ATTEMPTS
    return app_config


@pytest.fixture
def sessions(app: Flask) -> Iterator[Callable[[], Session]]:
    """Open independent sessions on the app's engine, as separate requests or servers would.

    ``expire_on_commit=False`` as in the app, so what a session read stays what it saw.
    """
    opened: list[Session] = []

    def open_session() -> Session:
        session = Session(db.engine, expire_on_commit=False)
        opened.append(session)
        return session

    with app.app_context():
        yield open_session
        for session in opened:
            session.close()


def make_installing_node(client, mac: str = MAC) -> str:
    """A node given a workflow, moved to pending and PXE-booted into installing."""
    response = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": WORKFLOW_ID})
    assert response.status_code == 201, response.json
    node_id = response.json["data"]["id"]
    response = client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": "pending"})
    assert response.status_code == 200, response.json
    response = client.get(f"/api/v1/boot?mac={mac}")
    assert "\nkernel " in response.text, response.text
    return node_id


@dataclass(frozen=True)
class Picture:
    """Everything a contender could have written about one node."""

    node: dict[str, Any]
    events: list[tuple[str, str, str | None]]
    moves: list[tuple[str | None, str, str]]

    def count(self, event_type: str) -> int:
        return sum(1 for kind, _, _ in self.events if kind == event_type)


def picture(open_session: Callable[[], Session], node_id: str) -> Picture:
    """Read the node, its events and its state log afresh."""
    with open_session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        columns = {attr.key: getattr(node, attr.key) for attr in inspect(Node).column_attrs}
        events = session.scalars(
            select(NodeEvent).where(NodeEvent.node_id == node_id).order_by(NodeEvent.id)
        )
        moves = session.scalars(
            select(NodeStateLog).where(NodeStateLog.node_id == node_id).order_by(NodeStateLog.id)
        )
        return Picture(
            columns,
            [(event.event_type, event.status, event.effect) for event in events],
            [(move.from_state, move.to_state, move.triggered_by) for move in moves],
        )


# -- the contenders -------------------------------------------------------------------------


@dataclass
class Race:
    """The moment of the race: the app's rules and settings at a time past the deadline."""

    app: Flask
    now: datetime

    @property
    def rules(self) -> StallRules:
        return StallRules.from_config(self.app.config)

    def boot_settings(self) -> BootSettings:
        return BootSettings(
            server_url=self.app.config["SERVER_URL"],
            auto_register=True,
            workflows=self.app.extensions["provisioner.domain.workflows"],
            rules=self.rules,
        )


def act_on_stale(name: str, session: Session, node: Node, race: Race) -> None:
    """What ``name`` does with the node it read earlier, in a write transaction of its own."""
    with write_transaction(session):
        if name == "report":
            apply_report(
                session,
                node,
                INSTALL_COMPLETE,
                peer_ip=None,
                max_attempts=race.rules.max_attempts,
                now=race.now,
            )
            return
        stall = stall_of(node, race.rules, race.now)
        assert stall is not None, "the stale read must still show a stalled install"
        trigger = Trigger.SWEEPER if name == "sweeper" else Trigger.BOOT
        handle_stall(session, node, stall, rules=race.rules, triggered_by=trigger, now=race.now)


def act_fresh(name: str, session: Session, race: Race) -> str:
    """What ``name`` does through its real entry point, reading the node afresh."""
    if name == "sweeper":
        return f"timed out {sweep_stalled_installs(session, race.rules, race.now).timed_out}"
    if name == "boot":
        return answer_boot(
            session,
            BootRequest(mac=MAC),
            race.boot_settings(),
            race.now,
            reads=single_reads(race.app),
        )
    with write_transaction(session):  # the steps of POST /api/v1/report
        node = find_node(session, MAC, for_update=True)
        assert node is not None
        outcome = apply_report(
            session,
            node,
            INSTALL_COMPLETE,
            peer_ip=None,
            max_attempts=race.rules.max_attempts,
            now=race.now,
        )
        return outcome.effect


#: What the node looks like after each contender wins: state, attempts, timeouts, new moves.
WINNER_OUTCOME = {
    "sweeper": ("pending", 1, 1, [("installing", "pending", "sweeper")]),
    "boot": (
        "installing",
        1,
        1,
        [("installing", "pending", "boot"), ("pending", "installing", "boot")],
    ),
    "report": ("installed", 0, 0, [("installing", "installed", "node_report")]),
}
CONTENDERS = list(WINNER_OUTCOME)


@pytest.mark.parametrize(
    ("winner", "loser"),
    list(itertools.product(CONTENDERS, repeat=2)),
    ids=lambda name: name,
)
def test_first_writer_wins_and_the_stale_one_writes_nothing(
    app, client, clock, sessions, winner, loser
):
    node_id = make_installing_node(client)
    entered_installing = clock()
    race = Race(app, clock.advance(minutes=TIMEOUT_MINUTES + 1))
    before = picture(sessions, node_id)

    loser_session = sessions()
    stale = loser_session.get(Node, node_id)
    assert (stale.state, stale.state_changed_at) == ("installing", entered_installing)

    act_fresh(winner, sessions(), race)
    won = picture(sessions, node_id)
    state, attempts, timeouts, moves = WINNER_OUTCOME[winner]
    assert won.node["state"] == state
    assert won.node["install_attempts"] == attempts
    assert won.node["install_timeouts"] == timeouts
    assert won.count(EventType.INSTALL_TIMEOUT) == timeouts
    assert won.moves == before.moves + moves

    with pytest.raises(ConcurrentTransition):
        act_on_stale(loser, loser_session, stale, race)
    assert picture(sessions, node_id) == won, "the losing contender wrote something"


@pytest.mark.parametrize("winner", CONTENDERS)
def test_a_loser_that_reads_again_does_not_count_the_timeout_twice(
    app, client, clock, sessions, winner
):
    node_id = make_installing_node(client)
    race = Race(app, clock.advance(minutes=TIMEOUT_MINUTES + 1))
    act_fresh(winner, sessions(), race)
    won = picture(sessions, node_id)

    answers = {name: act_fresh(name, sessions(), race) for name in CONTENDERS if name != winner}

    after = picture(sessions, node_id)
    assert after.count(EventType.INSTALL_TIMEOUT) == won.count(EventType.INSTALL_TIMEOUT) <= 1
    assert after.node["install_attempts"] == won.node["install_attempts"]
    assert after.node["install_timeouts"] == won.node["install_timeouts"]
    if "sweeper" in answers:
        assert answers["sweeper"] == "timed out 0"
    if winner == "report":
        assert after.node["state"] == "installed"
        assert "installed" in answers["boot"] and "kernel" not in answers["boot"]


def test_two_sweepers_fail_a_last_attempt_once(app, client, clock, sessions):
    app.config["MAX_INSTALL_ATTEMPTS"] = 1
    node_id = make_installing_node(client)
    race = Race(app, clock.advance(minutes=TIMEOUT_MINUTES + 1))
    second = sessions()
    stale = second.get(Node, node_id)

    assert act_fresh("sweeper", sessions(), race) == "timed out 1"
    with pytest.raises(ConcurrentTransition):
        act_on_stale("sweeper", second, stale, race)
    assert act_fresh("sweeper", sessions(), race) == "timed out 0"

    after = picture(sessions, node_id)
    assert after.node["state"] == "install_failed"
    assert (after.node["install_attempts"], after.node["install_timeouts"]) == (1, 1)
    assert after.count(EventType.INSTALL_TIMEOUT) == 1
    assert after.moves[-1] == ("installing", "install_failed", "sweeper")
    assert [move for move in after.moves if move[1] == "install_failed"] == [after.moves[-1]]


@pytest.mark.parametrize("winner", CONTENDERS)
def test_the_winner_stamps_the_node_with_the_race_time(app, client, clock, sessions, winner):
    node_id = make_installing_node(client)
    race = Race(app, clock.advance(minutes=TIMEOUT_MINUTES + 1))
    act_fresh(winner, sessions(), race)
    after = picture(sessions, node_id)
    assert after.node["state_changed_at"] == race.now
    assert after.node["updated_at"] == race.now, "updated_at did not come from the app's clock"


def test_sweep_skips_a_node_moved_under_it_and_handles_the_rest(
    app, client, clock, sessions, monkeypatch
):
    moved_id = make_installing_node(client, MAC)
    other_id = make_installing_node(client, OTHER_MAC)
    race = Race(app, clock.advance(minutes=TIMEOUT_MINUTES + 1))
    rebooted_at = clock()
    real_stall_of = sweeper.stall_of
    sweep_session = sessions()

    def stall_of_then_moved_elsewhere(node: Node, rules: StallRules, now: datetime):
        """Let another writer restart ``moved_id``'s install after the sweep selected it.

        The sweep holds the write lock, so the change is made through its own session,
        between the read of the batch and its guarded update.
        """
        if node.id == moved_id:
            sweep_session.execute(
                update(Node)
                .where(Node.id == moved_id)
                .values(state_changed_at=rebooted_at, updated_at=rebooted_at)
                .execution_options(synchronize_session=False)
            )
        return real_stall_of(node, rules, now)

    monkeypatch.setattr(sweeper, "stall_of", stall_of_then_moved_elsewhere)
    moved_before = picture(sessions, moved_id)

    result = sweep_stalled_installs(sweep_session, race.rules, race.now)

    assert (result.timed_out, result.retried, result.failed) == (1, 1, 0)
    moved = picture(sessions, moved_id)
    assert moved.node == moved_before.node | {
        "state_changed_at": rebooted_at,
        "updated_at": rebooted_at,
    }
    assert (moved.events, moved.moves) == (moved_before.events, moved_before.moves)
    other = picture(sessions, other_id)
    assert (other.node["state"], other.node["install_attempts"]) == ("pending", 1)
    assert other.count(EventType.INSTALL_TIMEOUT) == 1


# -- threads against the real app -----------------------------------------------------------

ROUNDS = 120
BARRIER_TIMEOUT_SECONDS = 10


@dataclass
class Round:
    number: int
    mac: str
    node_id: str
    last_attempt: bool


def start_round(app: Flask, client, number: int) -> Round:
    """A fresh installing node; on odd rounds it is on its last attempt."""
    mac = f"52:54:00:be:{number // 256:02x}:{number % 256:02x}"
    node_id = make_installing_node(client, mac)
    last_attempt = number % 2 == 1
    if last_attempt:
        with app.app_context(), write_transaction(db.session):
            db.session.execute(
                update(Node).where(Node.id == node_id).values(install_attempts=MAX_ATTEMPTS - 1)
            )
    return Round(number, mac, node_id, last_attempt)


def collide(app: Flask, round_: Round, pool: ThreadPoolExecutor) -> tuple[Any, Any]:
    """Run the sweep job, a boot and an install_complete report at the same moment."""
    barrier = threading.Barrier(3, timeout=BARRIER_TIMEOUT_SECONDS)

    def sweep() -> None:
        barrier.wait()
        run_sweep(app)

    def boot():
        client = app.test_client()
        barrier.wait()
        return client.get(f"/api/v1/boot?mac={round_.mac}")

    def report():
        client = app.test_client()
        barrier.wait()
        return client.post(
            "/api/v1/report", json={"mac_address": round_.mac, "event": "install_complete"}
        )

    tasks = [sweep, boot, report]
    if round_.number % 3:  # vary who the pool starts first, too
        tasks = tasks[round_.number % 3 :] + tasks[: round_.number % 3]
    futures = {task.__name__: pool.submit(task) for task in tasks}
    results = {
        name: future.result(timeout=2 * BARRIER_TIMEOUT_SECONDS)
        for name, future in futures.items()
    }
    return results["boot"], results["report"]


def judge(round_: Round, setup: Picture, after: Picture) -> str:
    """Check the round's moves and events; name the outcome."""
    moves = after.moves[len(setup.moves) :]
    events = after.events[len(setup.events) :]
    timeouts = after.count(EventType.INSTALL_TIMEOUT)
    completes = [event for event in events if event[0] == EventType.INSTALL_COMPLETE]
    context = f"round {round_.number}: moves {moves}, events {events}"
    assert timeouts <= 1, context
    assert len(completes) == 1, context  # the report is always recorded, applied or ignored
    attempts_before = MAX_ATTEMPTS - 1 if round_.last_attempt else 0

    if moves[0] == ("installing", "installed", "node_report"):
        assert moves == [moves[0]] and timeouts == 0, context
        assert completes[0][2] == "installing→installed", context
        assert after.node["state"] == "installed", context
        assert after.node["install_attempts"] == attempts_before, context
        return "report won"

    first_from, first_to, trigger = moves[0]
    assert first_from == "installing" and trigger in {"sweeper", "boot"}, context
    assert timeouts == 1, context
    assert after.node["install_attempts"] == attempts_before + 1, context
    assert after.node["install_timeouts"] == 1, context
    if round_.last_attempt:
        assert moves == [("installing", "install_failed", trigger)], context
        assert completes[0][2] == "ignored: node is install_failed", context
        return f"{trigger} won"
    assert first_to == "pending", context
    reinstall = [("pending", "installing", "boot")]
    if moves[1:] == reinstall + [("installing", "installed", "node_report")]:
        # The boot re-served the installer before the report came in: the report is applied to
        # the new attempt (it carries no attempt number), never to the one that timed out.
        assert completes[0][2] == "installing→installed", context
        assert after.node["state"] == "installed", context
        return f"{trigger} won, report applied to the new attempt"
    assert moves[1:] in ([], reinstall), context
    assert trigger == "sweeper" or moves[1:] == reinstall, context
    assert completes[0][2].startswith("ignored: node is "), context
    return f"{trigger} won"


@pytest.mark.slow  # many rounds of three racing threads
def test_sweep_boot_and_report_collide_on_a_stalled_node(app, client, clock, sessions):
    outcomes: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=3) as pool:
        for number in range(ROUNDS):
            round_ = start_round(app, client, number)
            clock.advance(minutes=TIMEOUT_MINUTES + 1)
            setup = picture(sessions, round_.node_id)

            boot, report = collide(app, round_, pool)

            assert boot.status_code == 200, boot.text
            assert boot.text.startswith("#!ipxe\n"), boot.text
            assert report.status_code == 200, report.json
            outcomes[judge(round_, setup, picture(sessions, round_.node_id))] += 1
            response = client.delete(f"/api/v1/nodes/{round_.node_id}")  # keep later sweeps small
            assert response.status_code == 200, response.json
    print(f"\n{ROUNDS} rounds: {dict(outcomes)}")
