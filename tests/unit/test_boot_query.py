"""``load_boot_query`` answers what ``BootQuerySchema().load`` answers, for any query: the
same values, or the same messages for the same fields."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from provisioner.web.schemas import BootQuerySchema
from provisioner.web.schemas import load_boot_query

FIELDS = list(BootQuerySchema().load_fields)

macs = st.sampled_from(
    [
        "52:54:00:12:34:56",
        "52-54-00-12-34-56",
        "525400123456",
        " 52:54:00:AB:CD:EF ",
        "01:00:5e:00:00:01",  # multicast
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "52:54:00:12:34",
        "not a mac",
    ]
)
values = st.one_of(
    st.just(""),
    macs,
    st.sampled_from(["web-01", "web_01", "-web", "a" * 64, "x86_64", "efi", "web\n"]),
    st.text(max_size=300),
    st.text(max_size=10).map(lambda text: text + "\x00"),
)
queries = st.dictionaries(
    st.sampled_from([*FIELDS, "token", "extra", "MAC"]), values, max_size=len(FIELDS) + 2
)


def outcome(load, query: dict[str, str]) -> tuple[str, Any]:
    try:
        return "loaded", load(query)
    except ValidationError as exc:
        return "refused", exc.messages


@given(query=queries)
@settings(max_examples=500)
def test_load_boot_query_answers_as_the_schema_does(query):
    assert outcome(load_boot_query, query) == outcome(BootQuerySchema().load, query)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"mac": ""},
        {"mac": "52:54:00:12:34:56", "uuid": "", "hostname": "web-01", "asset": "A1"},
        {"mac": "01:00:5e:00:00:01", "uuid": "u" * 37, "hostname": "-bad"},
        {"mac": "52:54:00:12:34:56", "vendor": "Dell\x00"},
    ],
)
def test_typical_and_refused_queries_agree(query):
    assert outcome(load_boot_query, query) == outcome(BootQuerySchema().load, query)
