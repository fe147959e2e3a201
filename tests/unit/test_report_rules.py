"""The report and failure rules as pure functions: no app, no database."""

import itertools
from datetime import UTC
from datetime import datetime
from types import SimpleNamespace

import pytest
from eventtable import FITS
from eventtable import REPORTED
from eventtable import STATES
from hypothesis import given
from hypothesis import strategies as st

from provisioner.domain.events import EventType
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import count_failure
from provisioner.domain.report_tokens import TokenMatch
from provisioner.domain.reports import BAD_TOKEN
from provisioner.domain.reports import LEGACY_STATUS
from provisioner.domain.reports import Refused
from provisioner.domain.reports import Report
from provisioner.domain.reports import Reporter
from provisioner.domain.reports import check_reporter
from provisioner.domain.reports import plan_report
from provisioner.domain.reports import report_columns
from provisioner.domain.reports import report_from_body
from provisioner.domain.tokens import token_hash

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@given(before=st.integers(min_value=0, max_value=10), most=st.integers(min_value=1, max_value=10))
def test_a_failed_attempt_retries_while_attempts_remain(before, most):
    failure = count_failure(before, "disk full", most)
    assert failure.attempts == before + 1
    assert failure.target == (State.PENDING if before + 1 < most else State.INSTALL_FAILED)
    assert failure.comment == f"disk full (attempt {before + 1} of {most})"


@given(before=st.integers(min_value=0, max_value=10), most=st.integers(min_value=1, max_value=10))
def test_a_reported_failure_is_planned_by_the_failure_rule(before, most):
    node = SimpleNamespace(state=State.INSTALLING, install_attempts=before, progress=None)
    plan = plan_report(node, Report(EventType.INSTALL_FAILED, message="boom"), most)
    failure = count_failure(before, "boom", most)
    assert plan.failure == "boom"
    assert plan.effect == f"installing→{failure.target} (attempt {failure.attempts} of {most})"


@pytest.mark.parametrize(("event", "state"), list(itertools.product(REPORTED, STATES)))
def test_every_event_from_every_state_is_planned_as_the_table_says(event, state):
    """The report rule moves, logs, counts or ignores each event as the table says."""
    node = SimpleNamespace(state=state, install_attempts=0, progress=None)
    progress = 40 if event == EventType.INSTALL_PROGRESS else None
    report = Report(EventType(event), message=f"{event} from the field", progress=progress)

    plan = plan_report(node, report, 3)

    ignored = (state, f"ignored: node is {state}", None)
    expected_state, expected_effect, expected_message = FITS.get((event, state), ignored)
    assert plan.effect == expected_effect
    assert plan.message == (
        expected_message or f"Event {event} recorded but ignored: node is {state}"
    )
    if plan.failure is not None:
        assert plan.failure == f"{event} from the field"
        assert count_failure(0, plan.failure, 3).target == expected_state
    else:
        assert (plan.target or state) == expected_state
    assert plan.progress == (40 if expected_effect == "progress 40%" else None)


def test_a_stale_report_changes_no_column():
    report = Report(EventType.HEARTBEAT, hardware={"hostname": "n1"})
    assert report_columns(report, None, now=NOW, stale=True) == {}


def test_a_status_only_report_sets_hardware_and_last_seen_but_no_event():
    columns = report_columns(Report(None, hardware={"hostname": "n1"}), None, now=NOW, stale=False)
    assert columns == {"hostname": "n1", "last_seen_at": NOW, "updated_at": NOW}


def test_a_progress_report_stores_its_figure_and_notes_the_event():
    node = SimpleNamespace(state=State.INSTALLING, install_attempts=0, progress=10)
    report = Report(EventType.INSTALL_PROGRESS, progress=40)
    columns = report_columns(report, plan_report(node, report, 3), now=NOW, stale=False)
    assert columns["progress"] == 40
    assert columns["last_event_type"] == EventType.INSTALL_PROGRESS
    assert columns["last_event_at"] == NOW


def node_with_tokens(previous: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        report_token_hash=token_hash("current"),
        previous_report_token_hash=token_hash("previous") if previous else None,
    )


def test_token_mode_tells_the_current_and_the_previous_token_apart():
    node = node_with_tokens()
    assert check_reporter(node, Reporter("m", "current"), True) is TokenMatch.CURRENT
    assert check_reporter(node, Reporter("m", "previous"), True) is TokenMatch.PREVIOUS
    assert check_reporter(node, Reporter("m", "wrong"), True) == BAD_TOKEN
    assert check_reporter(node, Reporter("m", None), True) == BAD_TOKEN
    assert check_reporter(node_with_tokens(False), Reporter("m", "previous"), True) == BAD_TOKEN


def test_token_mode_refuses_before_telling_a_node_does_not_exist():
    assert check_reporter(None, Reporter("m", "current", not_found="gone"), True) == BAD_TOKEN


def test_open_mode_takes_any_token_and_answers_404_for_no_node():
    assert check_reporter(node_with_tokens(), Reporter("m", "wrong"), False) is None
    refused = check_reporter(None, Reporter("m", None, not_found="gone"), False)
    assert refused == Refused(404, "gone", "not_found")


# -- the body: new and legacy fields ------------------------------------------------------------


@pytest.mark.parametrize("event", REPORTED)
def test_an_event_field_names_the_event_and_a_failure_is_a_failed_status(event):
    report = report_from_body({"mac_address": "52:54:00:00:00:01", "event": event})
    assert report.event_type == EventType(event)
    assert report.status == ("failed" if event == "install_failed" else "success")


@pytest.mark.parametrize(("status", "event"), list(LEGACY_STATUS.items()))
def test_each_legacy_installation_status_stands_for_its_event(status, event):
    assert report_from_body({"installation_status": status}).event_type == event


@pytest.mark.parametrize("status", list(LEGACY_STATUS))
def test_an_event_field_wins_over_a_legacy_status(status):
    body = {"event": "heartbeat", "installation_status": status}
    assert report_from_body(body).event_type == EventType.HEARTBEAT


@pytest.mark.parametrize(
    ("body", "progress"),
    [
        ({"event": "install_progress", "progress": 40}, 40),
        ({"event": "install_progress", "installation_progress": 30}, 30),
        ({"event": "install_progress", "progress": 40, "installation_progress": 30}, 40),
        ({"event": "install_progress", "progress": 0, "installation_progress": 30}, 0),
        ({"installation_status": "progress", "installation_progress": 55}, 55),
        ({"event": "heartbeat"}, None),
    ],
)
def test_progress_comes_from_progress_else_the_legacy_field(body, progress):
    assert report_from_body(body).progress == progress


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"event": "install_failed", "installation_error": "disk"}, "disk"),
        ({"event": "install_failed", "message": "m", "installation_error": "disk"}, "m"),
        ({"installation_status": "failed", "installation_error": "disk"}, "disk"),
        ({"event": "heartbeat", "installation_error": "disk"}, None),
        ({"event": "install_complete", "message": "done"}, "done"),
    ],
)
def test_the_legacy_error_is_the_message_of_a_failure_only(body, message):
    assert report_from_body(body).message == message


@pytest.mark.parametrize("status", ["success", "failed", "in_progress"])
def test_an_explicit_status_is_kept(status):
    assert report_from_body({"event": "install_failed", "status": status}).status == status


def test_facts_metadata_and_the_client_id_are_carried_and_nothing_else():
    body = {
        "mac_address": "52:54:00:00:00:01",
        "event": "first_boot",
        "hostname": "web-7",
        "ip_address": "10.0.0.7",
        "vendor": None,
        "serial_number": "S1",
        "event_metadata": {"kernel": "6.1"},
        "event_id": "abc-123",
        "unknown": "x",
    }
    report = report_from_body(body)
    assert report.hardware == {
        "hostname": "web-7",
        "ip_address": "10.0.0.7",
        "serial_number": "S1",
    }
    assert report.metadata == {"kernel": "6.1"}
    assert report.client_event_id == "abc-123"


def test_a_body_without_an_event_is_a_status_only_report():
    report = report_from_body({"mac_address": "52:54:00:00:00:01", "hostname": "n1"})
    assert report.event_type is None
    assert report.status == "success"
    assert report.hardware == {"hostname": "n1"}
