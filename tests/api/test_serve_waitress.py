"""The waitress server ``serve`` builds: it accepts waiting connections in batches, and its
log batches lines while its threads are busy."""

import io
import logging
import socket
from contextlib import ExitStack

from flask import Flask
from waitress import wasyncore
from waitress.server import BaseWSGIServer

from provisioner.logs import BusyBatchingHandler
from provisioner.serve import ACCEPTS_PER_TURN
from provisioner.serve import create_server

WAITING = 10


def listener_of(server, stack: ExitStack) -> BaseWSGIServer:
    """The listening dispatcher of a one-socket ``server``, all of it closed with ``stack``."""
    stack.callback(server.task_dispatcher.shutdown)
    stack.callback(wasyncore.close_all, server._map)
    [listener] = [d for d in server._map.values() if isinstance(d, BaseWSGIServer)]
    return listener


def test_one_accept_turn_takes_every_waiting_connection():
    """A turn of the I/O loop visits every open connection: one accept per turn starves
    clients that connect per request once many slow connections are open."""
    with socket.create_server(("127.0.0.1", 0)) as sock, ExitStack() as stack:
        server = create_server(Flask(__name__), sockets=[sock], threads=1, asyncore_use_poll=True)
        listener = listener_of(server, stack)
        for _ in range(WAITING):
            # connect() returns once the kernel has queued the connection for accept().
            stack.enter_context(socket.create_connection(sock.getsockname()))

        listener.handle_accept()

        assert len(listener.active_channels) == WAITING <= ACCEPTS_PER_TURN


def test_accepting_stops_at_the_connection_limit():
    with socket.create_server(("127.0.0.1", 0)) as sock, ExitStack() as stack:
        server = create_server(
            Flask(__name__), sockets=[sock], threads=1, connection_limit=3, asyncore_use_poll=True
        )
        listener = listener_of(server, stack)
        for _ in range(WAITING):
            stack.enter_context(socket.create_connection(sock.getsockname()))

        listener.handle_accept()

        assert len(listener.active_channels) == 3


def test_the_log_batches_while_other_clients_are_connected(monkeypatch):
    handler = BusyBatchingHandler(io.StringIO())
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    with socket.create_server(("127.0.0.1", 0)) as sock, ExitStack() as stack:
        server = create_server(Flask(__name__), sockets=[sock], threads=1, asyncore_use_poll=True)
        listener = listener_of(server, stack)
        assert not handler.busy()  # nobody connected: each line at once
        stack.enter_context(socket.create_connection(sock.getsockname()))
        listener.handle_accept()
        assert not handler.busy()  # a client alone: its lines at once
        stack.enter_context(socket.create_connection(sock.getsockname()))
        listener.handle_accept()
        assert len(listener.active_channels) == 2
        assert handler.busy()
