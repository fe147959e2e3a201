"""Workflow files through the app: the check and list commands and the API."""

import pytest
from workflowfiles import workflow_text as yaml_text

# -- the check command --------------------------------------------------------------------


def test_workflows_check_passes_on_good_files(runner):
    """``workflows check`` exits 0 and says ok for each good file."""
    result = runner.invoke(args=["workflows", "check", "--offline"])
    assert result.exit_code == 0, result.output
    assert "test-os.yaml: ok" in result.output


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (yaml_text("bad", cmdline="x=${nope}"), "nope"),
        (yaml_text("bad", kernel_path="${kernel_server}/vmlinuz"), "kernel_server"),
        ("id: bad\nname: [\n", "bad.yaml"),
        (yaml_text("other"), "does not match"),
    ],
    ids=["unknown-variable-cmdline", "unknown-variable-kernel", "unparseable", "id-mismatch"],
)
def test_workflows_check_fails_on_a_bad_file(runner, workflows_dir, content, named):
    """One bad file makes ``workflows check`` exit 1 and name the problem."""
    (workflows_dir / "bad.yaml").write_text(content)
    result = runner.invoke(args=["workflows", "check", "--offline"])
    assert result.exit_code == 1
    assert named in result.output
    assert "test-os.yaml: ok" in result.output


def test_workflows_list_shows_errors(runner, workflows_dir):
    """``workflows list`` shows each file, with the error for a broken one."""
    (workflows_dir / "bad.yaml").write_text("id: bad\n")
    result = runner.invoke(args=["workflows", "list"])
    assert result.exit_code == 0
    assert "Test OS" in result.output
    assert "ERROR" in result.output


# -- the API ------------------------------------------------------------------------------


def test_api_lists_workflows_with_broken_ones_and_their_errors(client, workflows_dir):
    """A broken file is listed with its error, next to the good ones; no 500."""
    (workflows_dir / "broken.json").write_text("{not json")
    response = client.get("/api/v1/workflows")
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert body["total"] == 2
    by_id = {item["id"]: item for item in body["data"]}
    assert by_id["broken"]["valid"] is False
    assert "broken.json" in by_id["broken"]["error"]
    assert by_id["test-os"]["valid"] is True
    assert by_id["test-os"]["error"] is None
    assert by_id["test-os"]["name"] == "Test OS"
    assert by_id["test-os"]["kernel_path"] == "${server}/files/vmlinuz"


def test_api_shows_one_workflow(client):
    """``GET /api/v1/workflows/<id>`` returns the workflow's fields."""
    response = client.get("/api/v1/workflows/test-os")
    assert response.status_code == 200
    data = response.json["data"]
    assert data["id"] == "test-os"
    assert data["file"] == "test-os.yaml"
    assert data["initrd_path"] == "http://mirror.example/initrd.gz"
    assert data["valid"] is True


def test_api_shows_a_broken_workflow_with_its_error(client, workflows_dir):
    """A broken file is reported with its error rather than a 500."""
    (workflows_dir / "broken.yaml").write_text("id: broken\n")
    response = client.get("/api/v1/workflows/broken")
    assert response.status_code == 200
    assert response.json["data"]["valid"] is False
    assert "kernel_path" in response.json["data"]["error"]


@pytest.mark.parametrize("workflow_id", ["missing", "..", "...", "%2E%2E"])
def test_api_missing_workflow_is_404(client, workflow_id):
    """An id with no file is a JSON 404."""
    response = client.get(f"/api/v1/workflows/{workflow_id}")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json["success"] is False
