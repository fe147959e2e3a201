"""When an asset answer keeps its connection: the request's protocol and ``Connection``
header decide, and the sender's head says what it will do."""

import pytest

from provisioner.assets.http import Plan
from provisioner.assets.http import wants_keep_alive
from provisioner.assets.sender import head_bytes


@pytest.mark.parametrize(
    ("protocol", "connection", "kept"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "keep-alive", True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.1", "TE, close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "Keep-Alive", True),
        ("HTTP/1.0", "keep-alive, close", False),
        ("HTTP/0.9", None, False),
        ("", None, False),
    ],
)
def test_wants_keep_alive(protocol: str, connection: str | None, kept: bool) -> None:
    assert wants_keep_alive(protocol, connection) is kept


def test_head_says_whether_the_connection_stays() -> None:
    answer = Plan(200, [("Content-Length", "5")])
    kept = head_bytes(answer, "test/1", keep_alive=True).decode()
    closed = head_bytes(answer, "test/1").decode()
    assert kept.startswith("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")
    assert kept.endswith("Connection: keep-alive\r\n\r\n") and "close" not in kept
    assert closed.endswith("Connection: close\r\n\r\n") and "keep-alive" not in closed
