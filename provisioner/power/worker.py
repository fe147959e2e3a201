"""The power worker pool: BMC calls run here, off the request path, a few at a time.

A request only queues an action (one short transaction) and answers 202; a pool of at most
``POWER_WORKERS`` threads carries actions out, each bounded by ``POWER_TIMEOUT_SECONDS``.
Boots and reports never wait for a BMC: no worker holds a database lock while it talks to
one. The pool lives in the process that queued the action; an action left ``queued`` by a
process that stopped is failed by the next status refresh of any process.
"""

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import Flask

from provisioner.domain import power as rules
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.power.base import Deadline
from provisioner.power.base import PowerError
from provisioner.power.base import Target
from provisioner.power.base import perform
from provisioner.power.ipmi import Ipmi
from provisioner.power.redfish import Redfish
from provisioner.power.secrets import PasswordBox
from provisioner.power.secrets import load_key
from provisioner.power.wol import WakeOnLan
from provisioner.store import power as store
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow

log = logging.getLogger(__name__)

EXTENSION_KEY = "provisioner.power"
#: Extra seconds the worker waits past the deadline for a driver to give up by itself.
GRACE_SECONDS = 2.0


def make_driver(target: Target, config: dict):
    """The driver object for ``target``."""
    if target.driver == "ipmi":
        return Ipmi(target, config["POWER_IPMITOOL"])
    if target.driver == "redfish":
        return Redfish(target, verify_tls=config["POWER_REDFISH_VERIFY_TLS"])
    if target.driver == "wol":
        return WakeOnLan(target)
    raise PowerError(f"no driver {target.driver!r}", "unsupported")


def run_bounded(target: Target, action: str, config: dict) -> tuple[str | None, PowerError | None]:
    """Carry out one action in a thread of its own, waiting at most the timeout (+grace).

    Drivers keep to the deadline themselves (ipmitool is killed, HTTP requests time out);
    the join is the guarantee when one does not.
    """
    seconds = config["POWER_TIMEOUT_SECONDS"]
    outcome: dict[str, object] = {}

    def act() -> None:
        try:
            outcome["state"] = perform(make_driver(target, config), action, Deadline(seconds))
        except PowerError as exc:
            outcome["error"] = exc
        except Exception as exc:  # noqa: BLE001 - any driver failure is a power_failed
            outcome["error"] = PowerError(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=act, name="power-action", daemon=True)
    thread.start()
    thread.join(seconds + GRACE_SECONDS)
    if thread.is_alive():
        return None, PowerError(f"no answer within {seconds:g} s", "timeout")
    error = outcome.get("error")
    if isinstance(error, PowerError):
        return None, error
    return outcome.get("state"), None  # type: ignore[return-value]


class PowerService:
    """The app's power key and worker pool, both made on first use."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._box: PasswordBox | None = None
        self._refreshing = 0

    def box(self) -> PasswordBox:
        with self._lock:
            if self._box is None:
                config = self.app.config
                self._box = PasswordBox(
                    load_key(config["POWER_KEY"], config["POWER_KEY_FILE"], config["DATA_DIR"])
                )
            return self._box

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.app.config["POWER_WORKERS"], thread_name_prefix="power"
                )
            return self._pool

    def submit(self, action_ids: Iterable[int]) -> list[Future]:
        """Hand queued actions (already committed) to the pool; the CLI waits on the futures."""
        pool = self.pool()
        return [pool.submit(self._run, action_id) for action_id in action_ids]

    def _clock(self):
        return self.app.config.get("CLOCK", utcnow)()

    def _run(self, action_id: int) -> None:
        try:
            with self.app.app_context():
                self._carry_out(action_id)
        except Exception:  # noqa: BLE001 - a worker must never die silently
            log.exception("power action %s: unexpected error", action_id)

    def _carry_out(self, action_id: int) -> None:
        with write_transaction(db.session):
            started = rules.start(db.session, action_id, self.box, self._clock())
        if started is None:
            return
        if started.target is None:
            state, error = None, PowerError(started.problem or "cannot start", "error")
        else:
            state, error = run_bounded(started.target, started.action, self.app.config)
        with write_transaction(db.session):
            rules.finish(
                db.session,
                action_id,
                self._clock(),
                state=state,
                error=str(error) if error else None,
                kind=error.kind if error else None,
            )
        if error:
            log.warning("power %s of node %s failed: %s", started.action, started.node_id, error)

    def netboot_retries(self, node_ids: list[str]) -> int:
        """After a sweep (POWER_CYCLE_STALLED): netboot each retried node that has power
        control, so its retry starts without anyone at the machine. Returns how many."""
        queued = []
        with self.app.app_context():
            with write_transaction(db.session):
                for node_id in node_ids:
                    node = db.session.get(Node, node_id)
                    if node is None:
                        continue
                    action = rules.reinstall_action(
                        db.session, node, None, True, "sweeper", self._clock()
                    )
                    if action is not None:
                        queued.append(action.id)
        self.submit(queued)
        return len(queued)

    def refresh_states(self) -> int:
        """Queue a quiet status check of every BMC-driven node (no action, no event).

        Skipped while the previous round is still under way; returns how many were queued.
        """
        with self._lock:
            if self._refreshing:
                return 0
        with self.app.app_context():
            self._fail_orphans()
            ids = store.nodes_with_power(db.session, ("ipmi", "redfish"))
            db.session.rollback()
        with self._lock:
            self._refreshing = len(ids)
        pool = self.pool()
        for node_id in ids:
            pool.submit(self._check, node_id)
        return len(ids)

    def _check(self, node_id: str) -> None:
        try:
            with self.app.app_context():
                with write_transaction(db.session):
                    row = store.settings_of(db.session, node_id)
                    target = rules.target_of(db.session, row, self.box) if row else None
                if target is None:
                    return
                state, error = run_bounded(target, "status", self.app.config)
                if state is not None:
                    with write_transaction(db.session):
                        store.note_state(db.session, node_id, state, self._clock())
        except Exception:  # noqa: BLE001
            log.exception("power status of node %s: unexpected error", node_id)
        finally:
            with self._lock:
                self._refreshing -= 1

    def _fail_orphans(self) -> None:
        """Fail actions queued long ago that no worker took (their process stopped)."""
        limit = self._clock() - timedelta(seconds=10 * self.app.config["POWER_TIMEOUT_SECONDS"])
        with write_transaction(db.session):
            for action in store.unfinished_actions(db.session):
                if action.created_at < limit:
                    rules.finish(
                        db.session,
                        action.id,
                        self._clock(),
                        error="never carried out (the server process stopped?)",
                        kind="error",
                    )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def service(app: Flask) -> PowerService:
    """The app's PowerService (``init_app`` made it)."""
    return app.extensions[EXTENSION_KEY]


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = PowerService(app)


def after_sweep(app: Flask, retried_ids: list[str]) -> None:
    """The sweeper's hook, after its transactions committed (POWER_CYCLE_STALLED)."""
    if app.config["POWER_CYCLE_STALLED"] and retried_ids:
        count = service(app).netboot_retries(retried_ids)
        if count:
            log.info("sweep: %d retried install(s) netbooted through their BMC", count)


def run_refresh(app: Flask) -> None:
    """The scheduler's power-state refresh job."""
    service(app).refresh_states()
