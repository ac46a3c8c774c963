"""The one call's plain validator (``transactional.api.plain_link_data``) accepts only what
``TransactionalLinkSerializer`` accepts, and makes the same data; anything else is left to the
serializer, which words the error."""

from collections.abc import Mapping
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from transactional.api import TransactionalLinkSerializer, plain_link_data

CONTACT_FIELDS = ["person_id", "email", "phone", "first_name", "last_name", "username"]
odd = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["", " ", "k", "venue", "x" * 70]), st.integers(), max_size=2),
)


def mostly(usual, other):
    """``usual`` nine times in ten, else ``other``."""
    return st.integers(0, 9).flatmap(lambda n: other if n == 9 else usual)


def with_unknown(body: dict):
    """``body``, once in a while with a field the serializer does not know."""
    return mostly(st.just(body), st.just({**body, "colour": "red"}))


def field(valid: list, invalid: list):
    """Mostly valid values, sometimes a near miss, rarely anything at all."""
    return mostly(st.sampled_from(valid), mostly(st.sampled_from(invalid), odd))


TEXT_MISSES = ["x" * 200, "a\x00b", "\ud800", 12, None]
names = field(["Ana", " Ana ", "José", "", "  "], TEXT_MISSES)
moments = field(
    ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00+02:00", "2026-11-23 10:00"],
    ["2026-13-40", "2026-02-30T10:00:00Z", "9999-12-31T23:59:59-05:00", "", "soon", *TEXT_MISSES],
)
data_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4))
data = field(
    [{}, {"venue": "Arena", "gate": 4, "vip": True, "note": None}],
    [{" ": 1}, {"z" * 70: 1}, {"list": [1]}, {"obj": {}}, dict.fromkeys(map(str, range(101)))],
)
contacts = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "person_id": field(["C-1", " C-1 ", ""], TEXT_MISSES),
            "email": field(["ana@example.com", " Ana@Example.com ", ""], ["not an email"]),
            "phone": field(["+14155550100", "0791 123456", ""], TEXT_MISSES),
            "first_name": names,
            "last_name": names,
            "username": names,
            "metadata": field([{}, {"Team": "Ops", "n": 1}], [["Team"], "Ops"]),
        },
    ).flatmap(with_unknown),
    odd,
)
transactions = mostly(
    st.fixed_dictionaries(
        {"id": field(["T-1", " T-1 "], ["", "  ", *TEXT_MISSES])},
        optional={"occurred_at": moments, "data": data},
    ).flatmap(with_unknown),
    odd,
)
bodies = st.fixed_dictionaries(
    {"contact": contacts, "transaction": transactions},
    optional={
        "channel": field(["push", "kiosk-2", " push "], ["PUSH", "a" * 41, "", *TEXT_MISSES]),
        "expires_at": st.one_of(st.none(), moments),
    },
).flatmap(with_unknown)


def plain(value):
    """Nested mappings as dicts; times as their ISO text (equal instants in other zones are
    equal datetimes, but not the same answer)."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@settings(max_examples=300)
@given(body=bodies)
def test_the_plain_validator_accepts_only_what_the_serializer_accepts_with_the_same_data(body):
    made = plain_link_data(body)
    serializer = TransactionalLinkSerializer(data=body)
    valid = serializer.is_valid()
    if made is not None:
        assert valid, serializer.errors
        assert plain(made) == plain(serializer.validated_data)


def test_ordinary_bodies_take_the_plain_path():
    body = {
        "contact": {"person_id": " C-1 ", "email": "Ana@Example.com", "metadata": {"Team": "Ops"}},
        "transaction": {
            "id": "T-1",
            "occurred_at": "2026-11-23T10:00:00Z",
            "data": {"venue": "Arena", "gate": 4, "vip": True, "note": None},
        },
        "channel": "push",
        "expires_at": None,
    }
    made = plain_link_data(body)
    serializer = TransactionalLinkSerializer(data=body)
    assert serializer.is_valid()
    assert made is not None and plain(made) == plain(serializer.validated_data)
    assert made["contact"]["person_id"] == "C-1"
    assert plain_link_data({"contact": {"email": "a@b.co"}, "transaction": {"id": "T"}}) == {
        "contact": {"email": "a@b.co"},
        "transaction": {"id": "T"},
        "channel": "api",
    }
