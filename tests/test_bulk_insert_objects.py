"""core.bulk.insert_objects: what ``bulk_create`` does for new rows of one model, in
statements built once (the applier of two-way replies writes its sessions, responses and
texts with it)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import pytest

from brands.models import Brand
from core.bulk import insert_objects
from participants.models import Person

pytestmark = pytest.mark.django_db


def test_rows_are_inserted_with_their_values_and_keys():
    brand = Brand.objects.create(name="Alpha", slug="alpha")
    people = [Person(brand=brand, first_name=f"P{n}", phone=f"+1415555{n:04d}") for n in range(5)]
    with CaptureQueriesContext(connection) as queries:
        insert_objects(people)
    assert len(queries) == 1
    assert all(p.pk and not p._state.adding and p._state.db == "default" for p in people)
    stored = {p.pk: (p.first_name, p.phone, p.brand_id) for p in Person.objects.all()}
    assert stored == {p.pk: (p.first_name, p.phone, brand.pk) for p in people}
    # Defaults and auto_now_add values are those bulk_create writes.
    assert all(p.created_at is not None for p in Person.objects.all())


def test_a_related_object_saved_after_it_was_attached_gives_its_key():
    """As with bulk_create: an object attached before its related row was saved takes that
    row's key; one whose related row is still unsaved is refused before anything is sent."""
    brand = Brand(name="Beta", slug="beta")
    person = Person(brand=brand, first_name="Ada", phone="+14155550100")
    brand.save()
    insert_objects([person])
    assert Person.objects.get(pk=person.pk).brand_id == brand.pk
    unsaved = Person(brand=Brand(name="Gamma", slug="gamma"), first_name="Bob")
    with pytest.raises(ValueError, match="unsaved related object"):
        insert_objects([unsaved])
    assert Person.objects.count() == 1


def test_many_rows_go_in_batches_the_database_takes():
    brand = Brand.objects.create(name="Delta", slug="delta")
    people = [Person(brand=brand, first_name="X", phone=f"+1{n:010d}") for n in range(3000)]
    insert_objects(people)
    assert Person.objects.count() == 3000
    assert len({p.pk for p in people}) == 3000
    assert sorted(p.pk for p in people) == [p.pk for p in people]  # keys in the rows' order


def test_rows_it_does_not_cover_go_through_bulk_create():
    brand = Brand.objects.create(name="Eta", slug="eta")
    keyed = Person(pk=987654, brand=brand, first_name="Kept", created_at=timezone.now())
    insert_objects([keyed])
    assert Person.objects.get(pk=987654).first_name == "Kept"
    insert_objects([])  # nothing to do


def test_plain_values_are_bound_as_the_fields_themselves_prepare_them():
    """Fields whose value is bound as it is (``core.bulk._plain_type``: text, integers,
    booleans, keys) bind exactly what ``get_db_prep_save`` gives; a value of another type (a
    lazy string, a number as text) still goes through the field."""
    from django.utils.functional import lazy

    from conversations.models import Turn
    from core.bulk import _insert_objects_plan

    brand = Brand.objects.create(name="Theta", slug="theta")
    lazy_text = lazy(lambda: "lazy body", str)()
    turn = Turn(
        brand_id=str(brand.pk),  # a key given as text: the field's int()
        direction="out",
        kind="question",
        address="+14155550100",
        sender="+15005550006",
        body=lazy_text,
        segments=True,  # a bool in an integer field: not bound as it is
        status="pending",
        created_at=timezone.now(),
    )
    fields, kinds, _, _ = _insert_objects_plan(Turn, connection.alias, connection.vendor)
    plain = dict(zip(fields, kinds, strict=True))
    assert plain[Turn._meta.get_field("body")] is str
    assert plain[Turn._meta.get_field("brand")] is int
    assert plain[Turn._meta.get_field("created_at")] is None  # adapted per backend
    insert_objects([turn])
    stored = Turn.objects.get(pk=turn.pk)
    assert (stored.brand_id, stored.body, stored.segments) == (brand.pk, "lazy body", 1)
