"""Small helpers for tests that drive the node API through the Flask test client."""


def node_in_state(client, mac: str, state: str) -> dict:
    """A node registered through the API and put into ``state`` (forced, as an operator can)."""
    response = client.post("/api/v1/nodes", json={"mac_address": mac})
    assert response.status_code == 201, response.json
    node = response.json["data"]
    if state != "discovered":
        response = client.patch(
            f"/api/v1/nodes/{node['id']}/state", json={"state": state, "force": True}
        )
        assert response.status_code == 200, response.json
    return node


def client_from(application, remote_addr: str = "127.0.0.1"):
    """A test client whose requests come from ``remote_addr``."""
    client = application.test_client()
    client.environ_base["REMOTE_ADDR"] = remote_addr
    return client
