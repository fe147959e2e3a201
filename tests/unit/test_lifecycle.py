"""The lifecycle's rules as plain functions: every state x state x force, every trigger.

tests/api/test_lifecycle.py runs ``transition()`` against the database for the moves the
table allows and a few refused and forced ones (that the rules are wired to the rows); the
full tables are here.
"""

import itertools

import pytest

from provisioner.domain.lifecycle import STATE_NAMES
from provisioner.domain.lifecycle import TRANSITIONS
from provisioner.domain.lifecycle import IllegalTransition
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import check_transition
from provisioner.domain.lifecycle import failure_comment
from provisioner.domain.lifecycle import failure_effect
from provisioner.domain.lifecycle import failure_target
from provisioner.domain.lifecycle import starts_episode
from provisioner.domain.lifecycle import valid_transitions

#: The table exactly as issue 2 writes it.
SPEC_TABLE = {
    "discovered": {"pending", "retired"},
    "pending": {"installing", "retired"},
    "installing": {"installed", "pending", "install_failed", "retired"},
    "install_failed": {"pending", "retired"},
    "installed": {"active", "reprovision", "retired"},
    "active": {"reprovision", "retired"},
    "reprovision": {"pending", "retired"},
    "retired": set(),
}
ALL_PAIRS = list(itertools.product(SPEC_TABLE, SPEC_TABLE))


def test_there_are_the_eight_states():
    assert sorted(STATE_NAMES) == sorted(SPEC_TABLE)
    assert len(STATE_NAMES) == len(set(STATE_NAMES)) == 8


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids="{0[0]}->{0[1]}".format)
def test_a_move_is_allowed_iff_the_table_lists_it(current, target):
    if target in SPEC_TABLE[current]:
        check_transition(current, target)
        return
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert (info.value.current, info.value.target) == (current, target)
    assert info.value.valid == sorted(SPEC_TABLE[current])
    assert str(info.value) == f"Cannot move node from {current} to {target}"


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids="{0[0]}->{0[1]}".format)
def test_force_allows_every_move_but_staying_put_or_leaving_retired(current, target):
    if current == "retired" or current == target:
        with pytest.raises(IllegalTransition):
            check_transition(current, target, force=True)
    else:
        check_transition(current, target, force=True)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("target", ["sleeping", "", "PENDING", "pending "])
def test_an_unknown_target_is_a_value_error_not_a_refused_move(target, force):
    with pytest.raises(ValueError, match="Unknown state") as info:
        check_transition("discovered", target, force=force)
    assert not isinstance(info.value, IllegalTransition)


@pytest.mark.parametrize("state", list(SPEC_TABLE))
def test_valid_transitions_are_the_table_row_sorted(state):
    assert valid_transitions(state) == sorted(SPEC_TABLE[state])
    assert {str(s) for s in TRANSITIONS[State(state)]} == SPEC_TABLE[state]


#: (current, target) moves with which an operator starts a new provisioning episode: to
#: pending from anywhere but installing (a retry), and straight into installing from outside
#: an open episode (pending, installing, install_failed).
EPISODE_STARTS = {(current, "pending") for current in SPEC_TABLE if current != "installing"} | {
    (current, "installing")
    for current in ("discovered", "installed", "active", "reprovision", "retired")
}


@pytest.mark.parametrize("trigger", list(Trigger), ids=str)
@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids="{0[0]}->{0[1]}".format)
def test_only_an_operator_or_a_groups_auto_install_starts_an_episode(current, target, trigger):
    expected = trigger in (Trigger.ADMIN, Trigger.GROUP) and (current, target) in EPISODE_STARTS

    assert starts_episode(current, target, trigger) is expected


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "target"),
    [
        (1, 3, State.PENDING),
        (2, 3, State.PENDING),
        (3, 3, State.INSTALL_FAILED),
        (4, 3, State.INSTALL_FAILED),
        (1, 1, State.INSTALL_FAILED),
        (0, 1, State.PENDING),
    ],
)
def test_a_failure_retries_until_the_budget_is_spent(attempts, max_attempts, target):
    assert failure_target(attempts, max_attempts) == target


def test_a_failure_says_which_attempt_it_was():
    assert failure_comment("kernel panic", 2, 3) == "kernel panic (attempt 2 of 3)"
    assert failure_effect("installing", "pending", 2, 3) == "installing→pending (attempt 2 of 3)"
