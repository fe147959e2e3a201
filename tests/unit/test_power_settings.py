"""A node's power settings (``PowerSettingsSchema``) on their own: which address each driver
takes, credentials, limits. Through ``PATCH /api/v1/nodes/{ref}``: tests/api/test_power.py."""

import pytest
from marshmallow import ValidationError

from provisioner.web.schemas.power import PowerSettingsSchema

#: (settings, the field the refusal names)
BAD = [
    ({"driver": "ipmi"}, "address"),
    ({"driver": "ipmi", "address": "bmc:99999"}, "address"),
    ({"driver": "ipmi", "address": "bmc:0"}, "address"),
    ({"driver": "ipmi", "address": "bmc:port"}, "address"),
    ({"driver": "ipmi", "address": "[::1]x"}, "address"),
    ({"driver": "ipmi", "address": "bmc one"}, "address"),
    ({"driver": "ipmi", "address": "bmc;reboot"}, "address"),
    ({"driver": "ipmi", "address": "bmc\n"}, "address"),
    ({"driver": "ipmi", "address": "a" * 513}, "address"),
    ({"driver": "redfish", "address": "ftp://bmc/redfish/v1/Systems/1"}, "address"),
    ({"driver": "redfish", "address": "bmc/redfish/v1/Systems/1"}, "address"),
    ({"driver": "redfish", "address": "https://u:p@bmc/redfish/v1/Systems/1"}, "address"),
    ({"driver": "redfish", "address": "https://bmc/redfish/v1/Systems/1?x=1"}, "address"),
    ({"driver": "redfish", "address": "https://bmc/redfish/v1/Systems/1#top"}, "address"),
    ({"driver": "redfish", "address": "http://[::1/redfish/v1/Systems/1"}, "address"),
    ({"driver": "redfish", "address": "http://bmc:99x/redfish/v1/Systems/1"}, "address"),
    ({"driver": "redfish", "address": "https:///redfish/v1/Systems/1"}, "address"),
    ({"driver": "wol", "address": "bmc.example"}, "address"),
    ({"driver": "wol", "address": "fe80::1"}, "address"),
    ({"driver": "wol", "address": "10.0.0.255:70000"}, "address"),
    ({"driver": "wol", "address": "10.0.0.255", "password": "x"}, "username"),
    ({"driver": "wol", "address": "10.0.0.255", "username": "root"}, "username"),
    ({"driver": "manual", "address": "10.0.0.1"}, "address"),
    ({"driver": "manual", "username": "root"}, "username"),
    ({"driver": "manual", "password": "x"}, "password"),
    ({"driver": "telnet", "address": "10.0.0.1"}, "driver"),
    ({"address": "10.0.0.1"}, "driver"),
    ({"driver": "ipmi", "address": "10.0.0.9", "username": "u" * 256}, "username"),
    ({"driver": "ipmi", "address": "10.0.0.9", "password": "p" * 256}, "password"),
    ({"driver": "ipmi", "address": "10.0.0.9", "password": "a\x00b"}, "password"),
]

GOOD = [
    {"driver": "manual"},
    {"driver": "ipmi", "address": "10.0.0.9"},
    {"driver": "ipmi", "address": "10.0.0.9:623", "username": "root", "password": "pw"},
    {"driver": "ipmi", "address": "bmc-7.lab.example:6230"},
    {"driver": "ipmi", "address": "[fe80::1]:623"},
    {"driver": "ipmi", "address": "fe80::1"},
    {"driver": "redfish", "address": "https://bmc/redfish/v1/Systems/1"},
    {"driver": "redfish", "address": "http://[::1]:8000/redfish/v1/Systems/1"},
    {"driver": "wol", "address": "10.0.0.255"},
    {"driver": "wol", "address": "192.0.2.255:9"},
    {"driver": "ipmi", "address": "10.0.0.9", "username": "u" * 255, "password": "p" * 255},
]


@pytest.mark.parametrize(("settings", "field"), BAD, ids=lambda value: repr(value)[:60])
def test_bad_power_settings_are_refused_naming_the_field(settings, field):
    with pytest.raises(ValidationError) as info:
        PowerSettingsSchema().load(settings)
    assert field in info.value.messages, info.value.messages


@pytest.mark.parametrize("settings", GOOD, ids=lambda value: repr(value)[:60])
def test_good_power_settings_load_as_given(settings):
    assert PowerSettingsSchema().load(settings) == settings


def test_the_password_is_never_dumped():
    settings = {"driver": "ipmi", "address": "10.0.0.9", "username": "root", "password": "pw"}
    assert "password" not in PowerSettingsSchema().dump(settings)
