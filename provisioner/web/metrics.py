"""Prometheus metrics: per-instance counters, and gauges read from the database at scrape.

Counters count what this process committed (events, install outcomes, refused reports,
request latency); gauges that must agree across instances (nodes per state, stalled installs)
are computed from the shared database by one grouped query each, when scraped.
"""

import collections
import time
from collections.abc import Iterator

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import Info
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from provisioner.domain.lifecycle import State
from provisioner.domain.scrape import node_counts
from provisioner.domain.scrape import stalled_counts
from provisioner.domain.sweeper import StallRules
from provisioner.extensions import db
from provisioner.store import changes
from provisioner.version import VERSION
from provisioner.web.context import now

REPORTS_REJECTED = Counter(
    "provisioner_report_rejected_total",
    "Node reports refused before anything was written, by reason",
    ["reason"],
)
EVENTS = Counter(
    "provisioner_events_total",
    "Node events recorded, by type and status",
    ["event_type", "status"],
)
INSTALL_DURATION = Histogram(
    "provisioner_install_duration_seconds",
    "Time from installing to installed",
    buckets=(60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 14400),
)
INSTALL_ATTEMPTS = Counter(
    "provisioner_install_attempts_total",
    "Install attempts that ended, by outcome (success, retry, failed)",
    ["outcome"],
)
REQUEST_LATENCY = Histogram(
    "provisioner_request_duration_seconds",
    "HTTP request latency by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SWEEP_DURATION = Histogram(
    "provisioner_sweep_duration_seconds",
    "Duration of stalled-install sweeps",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)
SWEEP_LAST_SUCCESS = Gauge(
    "provisioner_sweep_last_success_timestamp_seconds",
    "Unix time the last stalled-install sweep finished without error",
)

BUILD_INFO = Info("provisioner_build", "The running provisioner's version")
BUILD_INFO.info({"version": VERSION})

OUTCOMES = {
    (State.INSTALLING, State.INSTALLED): "success",
    (State.INSTALLING, State.PENDING): "retry",
    (State.INSTALLING, State.INSTALL_FAILED): "failed",
}


@changes.after_commit
def _count_committed(
    events: list[tuple[str, str]], transitions: list[tuple[str, str, float]]
) -> None:
    # Counted per label set, not per row: a sweep commits hundreds of events at once.
    for (event_type, status), count in collections.Counter(events).items():
        EVENTS.labels(event_type=event_type, status=status).inc(count)
    outcomes: collections.Counter[str] = collections.Counter()
    for source, target, seconds in transitions:
        outcome = OUTCOMES.get((source, target))
        if outcome is not None:
            outcomes[outcome] += 1
        if outcome == "success":
            INSTALL_DURATION.observe(seconds)
    for outcome, count in outcomes.items():
        INSTALL_ATTEMPTS.labels(outcome=outcome).inc(count)


class DatabaseGauges:
    """Collects ``provisioner_nodes{state}`` and ``provisioner_stalled_installs{reason}``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Runs inside the ``/metrics`` request, so the app's session and config are there."""
        rules = StallRules.from_config(current_app.config)
        nodes = GaugeMetricFamily(
            "provisioner_nodes", "Nodes by lifecycle state", labels=["state"]
        )
        stalled = GaugeMetricFamily(
            "provisioner_stalled_installs", "Stalled installs by reason", labels=["reason"]
        )
        for state, count in node_counts(db.session).items():
            nodes.add_metric([state], count)
        for reason, count in stalled_counts(db.session, rules, now()).items():
            stalled.add_metric([reason], count)
        yield nodes
        yield stalled


def _start_timer() -> None:
    g.request_started = time.perf_counter()


#: ``REQUEST_LATENCY``'s histogram of each endpoint: finding it by its label each time
#: (``labels``: a check of the label, a lock) cost three times the observation.
_latency_of: dict[str, Histogram] = {}


def _observe_latency(response: Response) -> Response:
    started = g.pop("request_started", None)
    if started is not None:
        endpoint = request.endpoint or "unmatched"
        histogram = _latency_of.get(endpoint)
        if histogram is None:
            histogram = _latency_of[endpoint] = REQUEST_LATENCY.labels(endpoint=endpoint)
        histogram.observe(time.perf_counter() - started)
    return response


def metrics_view() -> Response:
    """``GET /metrics``: the process's counters plus the database gauges."""
    registry: CollectorRegistry = current_app.extensions["provisioner.metrics_registry"]
    return Response(
        generate_latest(REGISTRY) + generate_latest(registry), mimetype=CONTENT_TYPE_LATEST
    )


def init_app(app: Flask) -> None:
    """Time every request and serve ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseGauges())  # type: ignore[arg-type]
    app.extensions["provisioner.metrics_registry"] = registry
    app.before_request(_start_timer)
    app.after_request(_observe_latency)
    app.add_url_rule("/metrics", "metrics", metrics_view)
