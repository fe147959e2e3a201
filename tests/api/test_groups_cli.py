"""``provisioner groups``: set, list, show, match and delete, through the same rules as the API."""

MAC = "52:54:00:12:34:56"


def run(runner, *args):
    result = runner.invoke(args=["groups", *args])
    return result.exit_code, result.output


def test_set_list_match_delete(runner):
    code, out = run(
        runner,
        "set",
        "r650",
        "--manufacturer",
        "Dell*",
        "--workflow",
        "test-os",
        "--auto-install",
        "--var",
        "ntp=10.0.0.1",
        "--priority",
        "5",
    )
    assert (code, out) == (0, "created group r650\n")
    code, out = run(runner, "list")
    assert "r650" in out and "manufacturer=Dell*" in out
    code, out = run(runner, "match", MAC, "--manufacturer", "Dell Inc.")
    assert code == 0
    assert "group r650" in out and "workflow: test-os (from the group)" in out
    assert "auto_install" in out
    code, out = run(runner, "match", MAC)
    assert "no group matches" in out
    assert run(runner, "set", "r650", "--priority", "1") == (0, "updated group r650\n")
    assert run(runner, "delete", "r650", "--yes")[0] == 0
    assert "0 group(s)" in run(runner, "list")[1]


def test_set_refuses_what_the_api_refuses(runner):
    code, out = run(runner, "set", "g", "--var", "hostname=x")
    assert code != 0 and "built-in variable" in out
    code, out = run(runner, "set", "g", "--auto-install")
    assert code != 0 and "auto_install needs a workflow" in out
    code, out = run(runner, "set", "g", "--workflow", "nope")
    assert code != 0 and "unknown workflow" in out
    assert "0 group(s)" in run(runner, "list")[1]
