"""``GET``/``HEAD /assets/<path>``: the files of ``ASSETS_DIR``, for machines that boot.

Unauthenticated, like the boot script: firmware cannot send a token. The view decides the
answer (``assets.http.plan``); under ``provisioner serve`` the body goes out from the
sender process (``AssetSender``) with ``os.sendfile``, elsewhere (any WSGI server) as a
streamed body.
Either way the download ends in one event on the node at the client's address.
"""

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from flask import Flask
from flask import Response
from flask import current_app
from flask import request

from provisioner.assets.files import AssetNotFound
from provisioner.assets.files import OpenAsset
from provisioner.assets.files import open_asset
from provisioner.assets.http import Plan
from provisioner.assets.http import Slice
from provisioner.assets.http import plan
from provisioner.assets.http import wants_keep_alive
from provisioner.assets.sender import HANDOFF_KEY
from provisioner.assets.sender import Sent
from provisioner.domain.asset_downloads import record_download
from provisioner.domain.assets import asset_role
from provisioner.domain.workflows import WorkflowError
from provisioner.extensions import db
from provisioner.timeutil import utcnow
from provisioner.web.api import Blueprint
from provisioner.web.api import fail
from provisioner.web.context import peer_ip

log = logging.getLogger(__name__)
bp = Blueprint("assets", __name__, description="Installer files from ASSETS_DIR (node-facing)")
#: ``app.extensions`` key of the running server's ``AssetSender`` (absent outside ``serve``).
SENDER_KEY = "provisioner.asset_sender"
#: Bytes read per chunk when the body is streamed through WSGI.
CHUNK = 256 * 1024
FILE_RESPONSE = {
    "description": "The file, a range of it (206), or nothing new (304)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@bp.route("/assets/<path:path>", methods=["GET", "HEAD"])
@bp.doc(responses={"200": FILE_RESPONSE, "206": FILE_RESPONSE, "304": {}, "416": {}})
def asset(path: str):
    """A file of ``ASSETS_DIR``, with ``Range``, ``If-None-Match`` and ``If-Modified-Since``."""
    try:
        opened = open_asset(Path(current_app.config["ASSETS_DIR"]), path)
    except AssetNotFound as exc:
        log.info("asset refused: %s", exc)
        fail(404, f"No asset {path[:200]!r}")
    accel = current_app.config["ASSETS_ACCEL_REDIRECT"]
    if accel:
        return _accel_redirect(opened, accel)
    headers = {key.lower(): value for key, value in request.headers.items()}
    answer = plan(request.method, headers, opened.size, opened.mtime_ns, opened.path)
    if request.method == "HEAD" or not answer.body:
        opened.close()
        return _head_only(answer)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    download = Download(app, opened.path, peer_ip(), answer)
    sender = app.extensions.get(SENDER_KEY)
    detach = request.environ.get(HANDOFF_KEY)
    if sender is not None and detach is not None:
        detached = detach()
        if detached is not None:
            keep = wants_keep_alive(
                request.environ.get("SERVER_PROTOCOL", ""), request.headers.get("Connection")
            )
            give_back = detached.give_back if keep else None
            sender.submit(detached.sock, opened, answer, download.finished, give_back)
            return Response(status=204)  # never sent: the connection is the sender's now
    return _streamed(opened, answer, download)


def _accel_redirect(opened: OpenAsset, prefix: str) -> Response:
    """Let nginx send the file (ranges, conditionals and all) from its internal location."""
    opened.close()
    response = Response(status=200)
    response.headers["X-Accel-Redirect"] = prefix + quote(opened.path)
    if request.method == "GET":
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        Download(app, opened.path, peer_ip(), None).handed_to_nginx()
    return response


def _head_only(answer: Plan) -> Response:
    response = Response(status=answer.status)
    response.headers.clear()
    for name, value in answer.headers:
        response.headers[name] = value
    response.automatically_set_content_length = False
    return response


def _streamed(opened: OpenAsset, answer: Plan, download: "Download") -> Response:
    started = time.monotonic()
    sent = [0]

    def body() -> Iterator[bytes]:
        for piece in answer.body:
            if isinstance(piece, bytes):
                yield piece
                continue
            for chunk in _read(opened.fd, piece):
                sent[0] += len(chunk)
                yield chunk

    def finished() -> None:
        opened.close()
        seconds = time.monotonic() - started
        download.finished(Sent(sent[0], seconds, complete=sent[0] == answer.file_bytes))

    response = _head_only(answer)
    response.response = body()
    response.call_on_close(finished)
    return response


def _read(fd: int, piece: Slice) -> Iterator[bytes]:
    offset, remaining = piece.offset, piece.length
    while remaining:
        chunk = os.pread(fd, min(CHUNK, remaining), offset)
        if not chunk:
            return
        offset += len(chunk)
        remaining -= len(chunk)
        yield chunk


class Download:
    """A download under way; ``finished`` records it, once, as an event of its node."""

    def __init__(self, app: Flask, path: str, ip: str | None, answer: Plan | None) -> None:
        self.app = app
        self.path = path
        self.ip = ip
        self.answer = answer

    def finished(self, sent: Sent) -> None:
        """Log the download and add one ``asset_served`` event to the client's node."""
        with self.app.app_context():
            try:
                self._record(sent)
            finally:
                db.session.remove()

    def handed_to_nginx(self) -> None:
        """Record the hand-off (nginx alone knows when the download ends)."""
        record_download(
            db.session,
            self.ip,
            message_for=lambda workflow_id: (
                f"{self._role(workflow_id)} handed to nginx: {self.path} (X-Accel-Redirect)"
            ),
            complete=True,
            metadata={"path": self.path, "via": "X-Accel-Redirect"},
            now=self.app.config.get("CLOCK", utcnow)(),
        )

    def _record(self, sent: Sent) -> None:
        if self.answer is None:  # handed to nginx: recorded by handed_to_nginx
            return
        role = "asset"
        total = self.answer.file_bytes
        what = f"{sent.file_bytes} bytes" if self.answer.status == 200 else "range"
        seconds = round(sent.seconds, 3)
        metadata = {
            "path": self.path,
            "bytes": sent.file_bytes,
            "seconds": seconds,
            "status": self.answer.status,
            "complete": sent.complete,
        }

        def message(role: str) -> str:
            if sent.complete:
                return f"{role} served: {self.path}, {what} in {seconds:.2f} s"
            return (
                f"{role} download cut off: {self.path}, {sent.file_bytes} of {total} bytes "
                f"in {seconds:.2f} s"
            )

        node_id = record_download(
            db.session,
            self.ip,
            message_for=lambda workflow_id: message(self._role(workflow_id)),
            complete=sent.complete,
            metadata=metadata,
            now=self.app.config.get("CLOCK", utcnow)(),
        )
        log.info(
            "asset %s to %s: %s",
            self.path,
            self.ip,
            message(role),
            extra={"node_id": node_id, **metadata},
        )

    def _role(self, workflow_id: str | None) -> str:
        if not workflow_id:
            return "asset"
        try:
            workflow = self.app.extensions["provisioner.domain.workflows"].load(workflow_id)
        except WorkflowError:
            return "asset"
        return asset_role(workflow, self.path)
