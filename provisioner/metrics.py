"""Prometheus metrics kept in process (per-instance counters)."""

from prometheus_client import Counter

REPORTS_REJECTED = Counter(
    "provisioner_report_rejected_total",
    "Node reports refused before anything was written, by reason",
    ["reason"],
)
