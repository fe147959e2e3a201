"""The ``nodes`` commands: add, list, show, set-state and delete."""

import json

import pytest
from sqlalchemy import func
from sqlalchemy import select

from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog

MAC = "52:54:00:12:34:56"


def invoke(runner, *args: str, **kwargs):
    """Run ``provisioner nodes ...`` in-process."""
    return runner.invoke(args=["nodes", *args], **kwargs)


def stored_node(app, mac: str = MAC) -> Node | None:
    """The node with ``mac`` as the database has it now."""
    with app.app_context():
        return db.session.scalars(select(Node).where(Node.mac_address == mac)).one_or_none()


def add(runner, mac: str = MAC, *options: str) -> None:
    """Add a node and check the command succeeded."""
    result = invoke(runner, "add", mac, *options)
    assert result.exit_code == 0, result.output


# -- add ----------------------------------------------------------------------------------


def test_add_creates_a_discovered_node(app, runner):
    """``nodes add`` normalises the MAC and stores a discovered node."""
    result = invoke(runner, "add", "52-54-00-12-34-56", "--hostname", "web1")
    assert result.exit_code == 0, result.output
    node = stored_node(app)
    assert node is not None
    assert node.state == "discovered"
    assert node.hostname == "web1"
    assert node.id in result.output
    assert MAC in result.output


def test_add_with_workflow(app, runner):
    """``--workflow`` assigns an existing workflow."""
    add(runner, MAC, "--workflow", "test-os")
    assert stored_node(app).workflow_id == "test-os"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-mac"], "Not a valid MAC"),
        ([MAC, "--workflow", "nope"], "nope"),
        ([MAC, "--workflow", "../test-os"], "../test-os"),
    ],
)
def test_add_refuses_bad_input(app, runner, args, message):
    """A bad MAC or unknown workflow is a one-line error, exit 1, nothing stored."""
    result = invoke(runner, "add", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert stored_node(app) is None


def test_add_refuses_a_duplicate_mac(app, runner):
    """The same MAC in another form is refused."""
    add(runner)
    result = invoke(runner, "add", "525400123456")
    assert result.exit_code == 1
    assert "already exists" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Node)) == 1


# -- list ---------------------------------------------------------------------------------


def test_list_shows_nodes_and_filters_by_state(runner):
    """``nodes list`` prints one row per node; ``--state`` filters."""
    add(runner, "52:54:00:00:00:01")
    add(runner, "52:54:00:00:00:02", "--workflow", "test-os")
    assert invoke(runner, "set-state", "52:54:00:00:00:02", "pending").exit_code == 0
    result = invoke(runner, "list")
    assert result.exit_code == 0
    assert "52:54:00:00:00:01" in result.output
    assert "52:54:00:00:00:02" in result.output
    assert "2 of 2 node(s)" in result.output
    result = invoke(runner, "list", "--state", "pending")
    assert "52:54:00:00:00:01" not in result.output
    assert "52:54:00:00:00:02" in result.output
    assert "1 of 1 node(s)" in result.output


def test_list_of_nothing(runner):
    """An empty inventory lists zero nodes."""
    result = invoke(runner, "list")
    assert result.exit_code == 0
    assert "0 of 0 node(s)" in result.output


# -- show ---------------------------------------------------------------------------------


def test_show_prints_node_and_history_as_json(app, runner):
    """``nodes show`` prints the node and its history as JSON."""
    add(runner)
    invoke(runner, "set-state", MAC, "pending", "--comment", "go")
    result = invoke(runner, "show", "525400123456")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["id"] == stored_node(app).id
    assert data["state"] == "pending"
    moves = [(entry["from_state"], entry["to_state"]) for entry in data["history"]]
    assert moves == [(None, "discovered"), ("discovered", "pending")]
    assert data["history"][1]["comment"] == "go"


def test_show_unknown_node_fails(runner):
    """An unknown reference is an error naming it."""
    result = invoke(runner, "show", "no-such-node")
    assert result.exit_code == 1
    assert "no-such-node" in result.output


# -- set-state ----------------------------------------------------------------------------


def test_set_state_makes_a_legal_move(app, runner):
    """A legal move succeeds, is logged as an operator's and prints old -> new."""
    add(runner)
    result = invoke(runner, "set-state", MAC, "pending")
    assert result.exit_code == 0, result.output
    assert "discovered -> pending" in result.output
    node = stored_node(app)
    assert node.state == "pending"
    with app.app_context():
        entry = db.session.scalars(
            select(NodeStateLog).where(NodeStateLog.node_id == node.id).order_by(NodeStateLog.id)
        ).all()[-1]
    assert entry.triggered_by == "admin"


def test_set_state_refuses_an_illegal_move(app, runner):
    """An illegal move exits 1 with the reason; the node keeps its state."""
    add(runner)
    result = invoke(runner, "set-state", MAC, "active")
    assert result.exit_code == 1
    assert "discovered" in result.output and "active" in result.output
    assert "Traceback" not in result.output
    assert stored_node(app).state == "discovered"


def test_set_state_force_and_its_log(app, runner):
    """``--force`` makes the move and the log entry says so."""
    add(runner)
    result = invoke(runner, "set-state", MAC, "active", "--force")
    assert result.exit_code == 0, result.output
    assert stored_node(app).state == "active"
    data = json.loads(invoke(runner, "show", MAC).output)
    assert data["history"][-1]["metadata"]["forced"] is True


def test_set_state_cannot_leave_retired_even_with_force(app, runner):
    """Retired is final from the CLI too."""
    add(runner)
    assert invoke(runner, "set-state", MAC, "retired").exit_code == 0
    result = invoke(runner, "set-state", MAC, "pending", "--force")
    assert result.exit_code == 1
    assert stored_node(app).state == "retired"


def test_set_state_to_an_unknown_state_is_an_error(app, runner):
    """A state name that does not exist is a clean error, not a traceback."""
    add(runner)
    result = invoke(runner, "set-state", MAC, "sleeping", "--force")
    assert result.exit_code == 1
    assert "sleeping" in result.output
    assert isinstance(result.exception, SystemExit)
    assert stored_node(app).state == "discovered"


def test_set_state_unknown_node_fails(runner):
    """Moving a node that does not exist names it."""
    result = invoke(runner, "set-state", "52:54:00:ff:ff:ff", "pending")
    assert result.exit_code == 1
    assert "52:54:00:ff:ff:ff" in result.output


# -- delete -------------------------------------------------------------------------------


def test_delete_with_yes_removes_the_node_and_history(app, runner):
    """``nodes delete --yes`` removes the node and its state log."""
    add(runner)
    node_id = stored_node(app).id
    result = invoke(runner, "delete", MAC, "--yes")
    assert result.exit_code == 0, result.output
    assert node_id in result.output
    assert stored_node(app) is None
    with app.app_context():
        query = select(func.count()).select_from(NodeStateLog)
        assert db.session.scalar(query.where(NodeStateLog.node_id == node_id)) == 0


def test_delete_asks_and_can_be_declined(app, runner):
    """Without ``--yes`` the command asks; answering no keeps the node."""
    add(runner)
    result = invoke(runner, "delete", MAC, input="n\n")
    assert result.exit_code == 1
    assert stored_node(app) is not None
    result = invoke(runner, "delete", MAC, input="y\n")
    assert result.exit_code == 0
    assert stored_node(app) is None


def test_delete_unknown_node_fails(runner):
    """Deleting a node that does not exist names it."""
    result = invoke(runner, "delete", "52:54:00:ff:ff:ff", "--yes")
    assert result.exit_code == 1
    assert "not found" in result.output


def test_deleted_mac_can_be_added_again(app, runner):
    """After deletion the MAC is free for a new node."""
    add(runner)
    old_id = stored_node(app).id
    invoke(runner, "delete", MAC, "--yes")
    add(runner)
    assert stored_node(app).id != old_id
