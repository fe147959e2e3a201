"""Wake-on-LAN across a real LAN: the magic packet leaves this host as a broadcast on a veth
and is caught by a listener inside a network namespace the test makes (198.18.0.0/15, the
benchmarking range: no real network is touched)."""

import os
import secrets
import shutil
import subprocess
import sys

import pytest
from powerhelpers import finished_action

pytestmark = pytest.mark.e2e

LISTENER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 9))
sock.settimeout(60)
print("ready", flush=True)
data, sender = sock.recvfrom(2048)
print(data.hex(), sender[0], flush=True)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def lan():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("a network namespace needs the ip command (iproute2) and root")
    tag = secrets.token_hex(3)
    namespace, host_link, peer = f"prov-wol-{tag}", f"pw{tag}h", f"pw{tag}c"
    subnet = int(tag[:2], 16)
    ip("netns", "add", namespace)
    try:
        ip("link", "add", host_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", namespace)
        ip("addr", "add", f"198.19.{subnet}.1/24", "brd", "+", "dev", host_link)
        ip("link", "set", host_link, "up")
        ip("-n", namespace, "addr", "add", f"198.19.{subnet}.2/24", "brd", "+", "dev", peer)
        ip("-n", namespace, "link", "set", peer, "up")
        yield namespace, f"198.19.{subnet}.255"
    finally:
        subprocess.run(["ip", "link", "del", host_link], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_magic_packet_reaches_a_listener_on_the_lan(client, lan):
    namespace, broadcast = lan
    listener = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", LISTENER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        mac = "52:54:00:0f:0e:01"
        node = client.post("/api/v1/nodes", json={"mac_address": mac}).json["data"]
        response = client.patch(
            f"/api/v1/nodes/{node['id']}", json={"power": {"driver": "wol", "address": broadcast}}
        )
        assert response.status_code == 200, response.json
        queued = client.post(f"/api/v1/nodes/{node['id']}/power", json={"action": "on"})
        assert finished_action(client, queued.json["data"]["id"])["status"] == "succeeded"
        payload, sender = listener.stdout.readline().split()
    finally:
        listener.kill()
        listener.wait()
    assert bytes.fromhex(payload) == b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) * 16
    assert sender == broadcast.rsplit(".", 1)[0] + ".1"
