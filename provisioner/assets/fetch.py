"""Downloading a workflow's upstream files into ``ASSETS_DIR``, and checking them.

A download goes to ``.NAME.part`` beside its target (never served: hidden names are
refused) and is renamed into place only once its SHA-256 matches the workflow's checksum.
An interrupted download resumes from the ``.part`` (``Range`` with ``If-Range``, the
upstream validator kept in ``.NAME.part.validator``); an upstream that answers 200 to it
starts it over. A finished download whose checksum does not match is deleted, ``.part``
and all (resuming it again could only keep the bad bytes), and the error says so.
"""

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioner.assets.files import AssetNotFound
from provisioner.assets.files import clean_path
from provisioner.domain.assets import AssetSpec

#: Seconds a download may go without receiving anything.
TIMEOUT_SECONDS = 30
CHUNK = 1024 * 1024
#: A SHA256SUMS file larger than this is not one.
SUMS_LIMIT = 4 * 1024 * 1024
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(.+)$")

#: ``progress(done, total)``: bytes so far (including a resumed part) and the total, or
#: ``None`` when the upstream does not say.
Progress = Callable[[int, int | None], None]


class AssetError(Exception):
    """An asset cannot be fetched or does not match; the message says why and what was done."""


@dataclass(frozen=True)
class Fetched:
    """What ``fetch`` did: ``downloaded``, ``resumed`` or ``up to date``, and the digest."""

    path: Path
    outcome: str
    digest: str
    size: int


def target(root: Path, spec: AssetSpec) -> Path:
    """Where ``spec``'s file lives below ``root`` (its path checked like a request's)."""
    try:
        return root / clean_path(spec.path)
    except AssetNotFound as exc:
        raise AssetError(f"{spec.path}: not a path below ASSETS_DIR ({exc})") from None


def part_of(path: Path) -> Path:
    """The hidden file a download of ``path`` is written to."""
    return path.with_name(f".{path.name}.part")


def file_sha256(path: Path, already: "hashlib._Hash | None" = None) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = already or hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open(request: urllib.request.Request):  # noqa: ANN202 - urllib's response type
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc
        raise AssetError(f"{request.full_url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AssetError(f"{request.full_url}: {getattr(exc, 'reason', exc)}") from None


def expected_digest(spec: AssetSpec) -> str:
    """The SHA-256 the workflow gives: outright, or the SHA256SUMS line of the file's name."""
    if spec.digest:
        return spec.digest
    if not spec.sums_url:
        raise AssetError(f"{spec.path}: no checksum (sha256:<hex> or a SHA256SUMS URL)")
    with _open(urllib.request.Request(spec.sums_url)) as answer:
        text = answer.read(SUMS_LIMIT).decode("utf-8", errors="replace")
    url_path = urllib.parse.unquote(urllib.parse.urlsplit(spec.url).path)
    found = sums_lookup(text, url_path, spec.path)
    if found is None:
        raise AssetError(f"{spec.path}: {spec.sums_url} has no one line for {url_path}")
    return found


def sums_lookup(text: str, url_path: str, path: str) -> str | None:
    """The digest of the SHA256SUMS line whose name ends the URL's path (the longest such
    name, so ``./netboot/gtk/.../linux`` never stands for ``./netboot/.../linux``); else
    the one line whose file name is the URL's or the asset's."""
    lines = []
    for line in text.splitlines():
        match = _SUMS_LINE.match(line.strip())
        if match:
            lines.append((match.group(1).lower(), match.group(2).strip().removeprefix("./")))
    suffixed = [(len(name), digest) for digest, name in lines if url_path.endswith("/" + name)]
    if suffixed:
        return max(suffixed)[1]
    names = {Path(url_path).name, Path(path).name}
    by_name = {digest for digest, name in lines if Path(name).name in names}
    return by_name.pop() if len(by_name) == 1 else None


def fetch(spec: AssetSpec, root: Path, progress: Progress | None = None) -> Fetched:
    """Make ``root/spec.path`` the upstream file with the expected checksum."""
    if not spec.url:
        raise AssetError(f"{spec.path}: no url to fetch it from")
    path = target(root, spec)
    digest = expected_digest(spec)
    if path.is_file() and file_sha256(path) == digest:
        return Fetched(path, "up to date", digest, path.stat().st_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_of(path)
    validator_file = part.with_name(part.name + ".validator")
    had = part.stat().st_size if part.is_file() else 0
    validator = validator_file.read_text().strip() if validator_file.is_file() else ""
    headers = {"Accept-Encoding": "identity"}
    if had and validator:
        headers |= {"Range": f"bytes={had}-", "If-Range": validator}
    with _open(urllib.request.Request(spec.url, headers=headers)) as answer:
        resumed = answer.status == 206 and _range_start(answer) == had
        if answer.status == 416 and had:
            resumed, answer_total = True, had  # the part is already whole
        else:
            answer_total = _total(answer, had if resumed else 0)
        if answer.status not in (200, 206) and not resumed:
            raise AssetError(f"{spec.url}: HTTP {answer.status}")
        validator_file.write_text(
            answer.headers.get("ETag") or answer.headers.get("Last-Modified") or ""
        )
        sha = hashlib.sha256()
        done = had if resumed else 0
        if resumed:
            file_sha256(part, sha)
        with part.open("ab" if resumed else "wb") as out:
            while answer.status != 416 and (chunk := answer.read(CHUNK)):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, answer_total)
            out.flush()
            os.fsync(out.fileno())
    if answer_total is not None and done != answer_total:
        raise AssetError(
            f"{spec.url}: connection closed after {done} of {answer_total} bytes; "
            f"kept {part.name}: run again to resume"
        )
    got = sha.hexdigest()
    if got != digest:
        part.unlink(missing_ok=True)
        validator_file.unlink(missing_ok=True)
        raise AssetError(
            f"{spec.path}: checksum mismatch (expected sha256:{digest}, got sha256:{got}); "
            f"deleted the download ({part.name}); {path.name} was left as it was"
        )
    os.replace(part, path)
    validator_file.unlink(missing_ok=True)
    return Fetched(path, "resumed" if resumed else "downloaded", digest, done)


def _range_start(answer) -> int | None:  # noqa: ANN001
    match = re.match(r"bytes (\d+)-\d+/", answer.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _total(answer, offset: int) -> int | None:  # noqa: ANN001
    length = answer.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


@dataclass(frozen=True)
class Verified:
    """One asset checked: ``ok``, or the problem; ``note`` when its checksum was skipped."""

    spec: AssetSpec
    path: Path
    problem: str | None = None
    note: str | None = None


def verify(spec: AssetSpec, root: Path, *, offline: bool = False) -> Verified:
    """Whether ``spec``'s file is in ``root`` and matches its checksum."""
    try:
        path = target(root, spec)
    except AssetError as exc:
        return Verified(spec, root, problem=str(exc))
    if not path.is_file():
        fix = " ('provisioner assets fetch' downloads it)" if spec.url else ""
        return Verified(spec, path, problem=f"{spec.path}: missing in ASSETS_DIR{fix}")
    if not spec.checksum:
        return Verified(spec, path, note=f"{spec.path}: present, no checksum to check")
    if spec.sums_url and offline:
        return Verified(spec, path, note=f"{spec.path}: present, checksum not checked (--offline)")
    try:
        digest = expected_digest(spec)
    except AssetError as exc:
        return Verified(spec, path, problem=str(exc))
    got = cached_sha256(path)
    if got != digest:
        return Verified(
            spec, path, problem=f"{spec.path}: checksum mismatch (expected {digest}, got {got})"
        )
    return Verified(spec, path)


def cached_sha256(path: Path) -> str:
    """``file_sha256``, remembered per (size, mtime) in the directory's hidden
    ``.sha256-cache.json``: checking a 2 GB image every ``workflows check`` costs seconds."""
    cache_file = path.parent / ".sha256-cache.json"
    info = path.stat()
    key = f"{path.name}:{info.st_size}:{info.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    digest = file_sha256(path)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path.name}:")} | {key: digest}
    try:
        cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only directory only costs the next check its time
    return digest
