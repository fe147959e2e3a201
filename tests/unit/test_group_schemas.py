"""A machine group's fields (``GroupCreateSchema``) on their own: names, MAC prefixes,
selectors, variables, priorities. What needs the workflows or the database (an unknown
workflow, a taken name, auto-install without a workflow): tests/api/test_groups_api.py."""

import pytest
from marshmallow import ValidationError

from provisioner.web.schemas.groups import BUILT_IN_VARIABLES
from provisioner.web.schemas.groups import GroupCreateSchema

#: (body, the field the refusal names)
BAD = [
    ({"name": "Bad Name"}, "name"),
    ({"name": "-leading-dash"}, "name"),
    ({"name": "a" * 65}, "name"),
    ({"name": "g/h"}, "name"),
    ({"name": "match"}, "name"),
    ({}, "name"),
    ({"name": "g", "mac_prefix": "52:54:0g"}, "mac_prefix"),
    ({"name": "g", "mac_prefix": "5"}, "mac_prefix"),
    ({"name": "g", "mac_prefix": "52:54:00:00:00:00:00"}, "mac_prefix"),
    ({"name": "g", "mac_prefix": "52::54"}, "mac_prefix"),
    ({"name": "g", "platform": "bios"}, "platform"),
    ({"name": "g", "architecture": "x86 64"}, "architecture"),
    ({"name": "g", "architecture": "a" * 33}, "architecture"),
    ({"name": "g", "tags": ["Not A Tag"]}, "tags"),
    ({"name": "g", "tags": ["rack1", "rack1"]}, "tags"),
    ({"name": "g", "variables": {"hostname": "x"}}, "variables"),
    ({"name": "g", "variables": {"Bad-Name": "x"}}, "variables"),
    ({"name": "g", "variables": {"ok": "x" * 1025}}, "variables"),
    ({"name": "g", "variables": {f"v{i}": "x" for i in range(51)}}, "variables"),
    ({"name": "g", "workflow_id": "../etc"}, "workflow_id"),
    ({"name": "g", "priority": 10**6}, "priority"),
    ({"name": "g", "priority": -1001}, "priority"),
    ({"name": "g", "priority": "high"}, "priority"),
    ({"name": "g", "manufacturer": "x" * 256}, "manufacturer"),
    ({"name": "g", "product": "x" * 256}, "product"),
    ({"name": "g", "serial": "x" * 256}, "serial"),
    ({"name": "g", "uuid": "x" * 65}, "uuid"),
    ({"name": "g", "description": "x" * 4097}, "description"),
    ({"name": "g", "auto_install": "sometimes"}, "auto_install"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=lambda value: repr(value)[:50])
def test_a_bad_group_is_refused_naming_the_field(body, field):
    with pytest.raises(ValidationError) as info:
        GroupCreateSchema().load(body)
    assert field in info.value.messages, info.value.messages


@pytest.mark.parametrize("name", sorted(BUILT_IN_VARIABLES))
def test_no_built_in_variable_may_be_set_by_a_group(name):
    with pytest.raises(ValidationError, match="built-in variable"):
        GroupCreateSchema().load({"name": "g", "variables": {name: "x"}})


@pytest.mark.parametrize(
    ("prefix", "loaded"),
    [
        ("52:54:00", "52:54:00"),
        ("52-54-00", "52:54:00"),
        ("525400", "52:54:00"),
        (" 52:54:00:AB ", "52:54:00:ab"),
        ("52", "52"),
        ("52:54:00:12:34:56", "52:54:00:12:34:56"),
    ],
)
def test_a_mac_prefix_loads_colon_separated_in_lower_case(prefix, loaded):
    assert GroupCreateSchema().load({"name": "g", "mac_prefix": prefix})["mac_prefix"] == loaded


def test_a_full_group_loads_as_given():
    body = {
        "name": "dell-r640.v2",
        "description": "Rack 4",
        "priority": -1000,
        "tags": ["rack4", "gpu"],
        "architecture": "x86_64",
        "platform": "efi",
        "manufacturer": "Dell*",
        "product": "PowerEdge R6?0",
        "serial": "[A-F]*",
        "uuid": "4c4c4544-0042",
        "workflow_id": "debian-12",
        "variables": {"disk": "/dev/sda", "_x": ""},
        "auto_install": True,
    }
    assert GroupCreateSchema().load(body) == body
