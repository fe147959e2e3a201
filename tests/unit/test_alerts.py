"""``contrib/alerts.yml``: well-formed Prometheus rules, one of them for a server that is down."""

import yaml
from paths import REPO_ROOT

ALERTS = REPO_ROOT / "contrib" / "alerts.yml"


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def test_every_rule_has_a_name_an_expression_a_severity_and_a_summary():
    for rule in rules():
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_a_server_that_is_down_or_never_scraped_alerts():
    """``up == 0`` fires on a failing scrape; ``absent(up)`` when no target is left at all."""
    down = next(rule for rule in rules() if rule["alert"] == "ProvisionerDown")
    assert 'up{job="provisioner"} == 0' in down["expr"]
    assert 'absent(up{job="provisioner"})' in down["expr"]
    assert down["labels"]["severity"] == "critical"
