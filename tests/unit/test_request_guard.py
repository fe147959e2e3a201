"""The request guard's rules without a request: which ``Host`` names the server answers to
(``AllowedHosts``), how a ``Host`` header splits, and the ``ALLOWED_HOSTS`` setting. Through
HTTP (refusals as JSON or an error page, cross-site writes, proxies):
tests/api/test_request_guard.py."""

import socket

import pytest

from provisioner.config import ConfigError
from provisioner.config import load_settings
from provisioner.web.request_guard import AllowedHosts
from provisioner.web.request_guard import is_ip_literal
from provisioner.web.request_guard import split_host

SERVER_URL = "http://prov.test:8080"

#: (ALLOWED_HOSTS, Host header, answered?) with SERVER_URL above.
HOSTS = [
    # IP literals cannot be rebound: always answered.
    ([], "127.0.0.1:8080", True),
    ([], "127.0.0.1", True),
    ([], "[::1]:8080", True),
    ([], "[::1]", True),
    ([], "[fe80::1]", True),
    ([], "10.1.2.3:8080", True),
    ([], "192.0.2.1:80", True),
    # localhost and SERVER_URL's host, any case, a trailing dot, any port.
    ([], "localhost", True),
    ([], "LOCALHOST:8080", True),
    ([], "localhost.", True),
    ([], "prov.test:8080", True),
    ([], "PROV.TEST", True),
    ([], "prov.test.:9000", True),
    # Anything else is a name an attacker's DNS could point here.
    ([], "rebind.attacker.example:8080", False),
    ([], "sub.prov.test", False),
    ([], "prov.test.attacker.example", False),
    ([], "localhost.attacker.example", False),
    ([], "127.0.0.1.nip.io", False),
    ([], "evil.example", False),
    # Exact names.
    (["provisioner.lab"], "provisioner.lab:8080", True),
    (["provisioner.lab"], "PROVISIONER.LAB", True),
    (["provisioner.lab."], "provisioner.lab", True),
    (["provisioner.lab"], "other.lab", False),
    (["provisioner.lab"], "xprovisioner.lab", False),
    (["provisioner.lab"], "provisioner.lab.evil.example", False),
    (["provisioner.lab"], "a.provisioner.lab", False),
    # A leading dot: the domain and every subdomain.
    ([".lab.example"], "a.b.lab.example", True),
    ([".lab.example"], "lab.example", True),
    ([".lab.example"], "node7.lab.example:8080", True),
    ([".lab.example"], "evil-lab.example", False),
    ([".lab.example"], "lab.example.evil", False),
    ([".lab.example"], "xlab.example", False),
    # "*": any name.
    (["*"], "anything.example", True),
    (["*", "provisioner.lab"], "rebind.attacker.example", True),
    # Several entries.
    (["a.lab", ".b.lab"], "a.lab", True),
    (["a.lab", ".b.lab"], "x.b.lab", True),
    (["a.lab", ".b.lab"], "x.a.lab", False),
]


@pytest.mark.parametrize(("configured", "host", "answered"), HOSTS)
def test_the_names_answered_are_addresses_localhost_server_url_and_allowed_hosts(
    configured, host, answered
):
    assert AllowedHosts(configured, SERVER_URL).allows(host) is answered


def test_this_machines_own_name_is_answered():
    assert AllowedHosts([], "").allows(socket.gethostname())


def test_without_server_url_only_its_host_is_no_longer_answered():
    assert not AllowedHosts([], "").allows("prov.test")
    assert AllowedHosts([], "").allows("localhost:8080")


@pytest.mark.parametrize(
    ("host", "parts"),
    [
        ("prov.test:8080", ("prov.test", "8080")),
        ("Prov.Test", ("prov.test", "")),
        ("[::1]:8080", ("::1", "8080")),
        ("[FE80::1]", ("fe80::1", "")),
        ("10.0.0.1:80", ("10.0.0.1", "80")),
        (" localhost:8080 ", ("localhost", "8080")),
    ],
)
def test_a_host_header_splits_into_name_and_port(host, parts):
    assert split_host(host) == parts


@pytest.mark.parametrize(
    ("name", "literal"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("10.0.0.256", False),
        ("localhost", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_only_addresses_are_ip_literals(name, literal):
    assert is_ip_literal(name) is literal


# -- the setting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [["prov.lab", ".lab.example", "*", "10.0.0.1", "::1"], "prov.lab, other.lab", []]
)
def test_allowed_hosts_accepts_names_domains_and_addresses(value):
    settings = load_settings("/nonexistent", {"ALLOWED_HOSTS": value}, environ={})
    assert isinstance(settings["ALLOWED_HOSTS"], list)


@pytest.mark.parametrize("value", [["http://prov.lab"], ["prov.lab:8080"], ["prov.lab/x"], [3], 5])
def test_allowed_hosts_refuses_what_is_not_a_host_name(value):
    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        load_settings("/nonexistent", {"ALLOWED_HOSTS": value}, environ={})
