"""What a ``GET``/``HEAD`` of an asset gets: the HTTP rules for big files, without sockets.

RFC 9110: ``If-None-Match`` before ``If-Modified-Since`` (304), ``If-Match`` and
``If-Unmodified-Since`` (412), ``Range`` on ``GET`` only, ``If-Range`` (an entity tag must
match strongly, a date exactly), one range as a plain 206, several as
``multipart/byteranges``, none satisfiable as 416 with ``Content-Range: bytes */SIZE``.
A ``Range`` header that does not parse is ignored (200), as the RFC asks.
"""

import mimetypes
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from email.utils import formatdate
from email.utils import parsedate_to_datetime

#: More ranges than this in one request (after merging overlaps) are refused with 416:
#: no installer asks for more, and each costs a part header.
MAX_RANGES = 32


@dataclass(frozen=True)
class Slice:
    """``length`` bytes of the file from ``offset``."""

    offset: int
    length: int


@dataclass
class Plan:
    """The status, headers and body (bytes and file slices, in order) of one answer."""

    status: int
    headers: list[tuple[str, str]]
    body: list[bytes | Slice] = field(default_factory=list)

    @property
    def content_length(self) -> int:
        """Bytes in the body (what ``Content-Length`` says for a ``GET``)."""
        return sum(len(piece) if isinstance(piece, bytes) else piece.length for piece in self.body)

    @property
    def file_bytes(self) -> int:
        """Bytes of the file the body holds."""
        return sum(piece.length for piece in self.body if isinstance(piece, Slice))


def entity_tag(size: int, mtime_ns: int) -> str:
    """A strong ETag from the file's size and modification time."""
    return f'"{size:x}-{mtime_ns:x}"'


def http_date(mtime_ns: int) -> str:
    """An IMF-fixdate for ``Last-Modified``."""
    return formatdate(mtime_ns // 1_000_000_000, usegmt=True)


def _parse_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _tags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_match(header: str, etag: str) -> bool:
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _tags(header))


def _strong_match(header: str, etag: str) -> bool:
    return any(tag == "*" or tag == etag for tag in _tags(header))


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """``[(first, last)]`` byte ranges a ``Range`` header asks for within ``size`` bytes,
    sorted and merged; ``None`` when it does not parse (ignore it), ``[]`` when none is
    satisfiable (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    wanted = []
    for item in spec.split(","):
        first_text, dash, last_text = item.strip().partition("-")
        if not dash or not (first_text or last_text):
            return None
        if not all(text.isdigit() for text in (first_text or "0", last_text or "0")):
            return None
        if not first_text:  # suffix: the last N bytes
            length = int(last_text)
            if length > 0 and size > 0:
                wanted.append((max(size - length, 0), size - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None
        last = int(last_text) if last_text else size - 1
        if first < size:
            wanted.append((first, min(last, size - 1)))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(wanted):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def plan(method: str, headers: Mapping[str, str], size: int, mtime_ns: int, path: str) -> Plan:
    """The answer to ``method`` (GET or HEAD) of a file; ``headers`` with lower-case keys."""
    etag = entity_tag(size, mtime_ns)
    modified = mtime_ns // 1_000_000_000
    common = [("ETag", etag), ("Last-Modified", http_date(mtime_ns)), ("Accept-Ranges", "bytes")]
    if "if-match" in headers and not _strong_match(headers["if-match"], etag):
        return _empty(412, common)
    since = _parse_date(headers.get("if-unmodified-since"))
    if "if-match" not in headers and since is not None and modified > since:
        return _empty(412, common)
    if "if-none-match" in headers:
        if _weak_match(headers["if-none-match"], etag):
            return Plan(304, common)
    else:
        since = _parse_date(headers.get("if-modified-since"))
        if since is not None and modified <= since:
            return Plan(304, common)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    ranges = None
    if method == "GET" and "range" in headers and _if_range_holds(headers, etag, modified):
        ranges = parse_ranges(headers["range"], size)
    if ranges is None:
        body: list[bytes | Slice] = [Slice(0, size)] if size else []
        return _with_length(Plan(200, [*common, ("Content-Type", content_type)], body))
    if not ranges or len(ranges) > MAX_RANGES:
        return _empty(416, [*common, ("Content-Range", f"bytes */{size}")])
    if len(ranges) == 1:
        first, last = ranges[0]
        extra = [("Content-Type", content_type), ("Content-Range", f"bytes {first}-{last}/{size}")]
        return _with_length(Plan(206, [*common, *extra], [Slice(first, last - first + 1)]))
    boundary = secrets.token_hex(16)
    body = []
    for first, last in ranges:
        part = (
            f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
        )
        body += [part.encode(), Slice(first, last - first + 1)]
    body.append(f"\r\n--{boundary}--\r\n".encode())
    kind = f"multipart/byteranges; boundary={boundary}"
    return _with_length(Plan(206, [*common, ("Content-Type", kind)], body))


def wants_keep_alive(protocol: str, connection: str | None) -> bool:
    """Whether the client wants the connection kept after the answer: HTTP/1.1 unless it
    says ``Connection: close``, HTTP/1.0 only if it says ``Connection: keep-alive``."""
    tokens = {token.strip().lower() for token in (connection or "").split(",")}
    if protocol.upper() == "HTTP/1.1":
        return "close" not in tokens
    if protocol.upper() == "HTTP/1.0":
        return "keep-alive" in tokens and "close" not in tokens
    return False


def _if_range_holds(headers: Mapping[str, str], etag: str, modified: int) -> bool:
    condition = headers.get("if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith(('"', "W/")):
        return condition == etag
    return _parse_date(condition) == modified


def _empty(status: int, headers: list[tuple[str, str]]) -> Plan:
    return Plan(status, [*headers, ("Content-Length", "0")])


def _with_length(answer: Plan) -> Plan:
    answer.headers.append(("Content-Length", str(answer.content_length)))
    return answer
