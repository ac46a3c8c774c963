import csv as _csv
import io as _io

from django.core.files.uploadedfile import SimpleUploadedFile

import factory
import pytest

from participants.models import Participant, Person
from tests.factories.brands import BrandFactory
from tests.factories.projects import ProjectFactory


class PersonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Person

    brand = factory.SubFactory(BrandFactory)
    person_id = factory.Sequence(lambda n: f"P{n:06d}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda o: f"{o.person_id.lower()}@example.com")
    username = factory.LazyAttribute(lambda o: o.person_id.lower())
    phone = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    metadata = factory.LazyFunction(dict)


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    project = factory.SubFactory(ProjectFactory)
    person = factory.SubFactory(PersonFactory, brand=factory.SelfAttribute("..project.brand"))
    role = "Employee"
    metadata = factory.LazyFunction(dict)


# --- Import helpers ---------------------------------------------------------------------------


def csv_bytes(rows, *, delimiter: str = ",", encoding: str = "utf-8", bom: bool = False) -> bytes:
    """``rows`` (a list of lists, or text) as CSV bytes in ``encoding``."""
    if isinstance(rows, str):
        text = rows
    else:
        buffer = _io.StringIO()
        _csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
        text = buffer.getvalue()
    data = text.encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def csv_upload(rows, *, name: str = "people.csv", **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, csv_bytes(rows, **kwargs), content_type="text/csv")


@pytest.fixture
def import_media(settings, tmp_path):
    """Uploads, validated rows and error files go to a temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def celery_eager():
    """Tasks run in-process when queued (after commit), through the real task functions."""
    from config.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous
