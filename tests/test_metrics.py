"""Operators see the engine: /metrics/ for Prometheus (token or allowed networks only) and
the staff page of what is sending now."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brands.models import Brand
from distributions.models import Distribution, Message
from distributions.services import distribution_create
from tests.factories.brands import UserFactory
from tests.factories.distributions import ProviderAccountFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db


def samples(response) -> dict[tuple, float]:
    """{(name, sorted labels): value} of a Prometheus text answer."""
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def brand(tenancy):
    """Brand A under a slug no other test (or test process sharing Redis) uses."""
    Brand.objects.filter(pk=tenancy.brand_a.pk).update(
        slug=f"m-{uuid.uuid4().hex[:8]}", integration_model="self_service"
    )
    tenancy.brand_a.refresh_from_db()
    tenancy.participant_a.delete()
    return tenancy.brand_a


def test_metrics_answer_404_to_strangers_and_serve_a_token_or_an_allowed_network(client, settings):
    settings.RELAY_METRICS_TOKEN = "s3cret-token"
    settings.RELAY_METRICS_ALLOW = ["10.1.0.0/16"]
    assert client.get("/metrics/", REMOTE_ADDR="203.0.113.9").status_code == 404
    assert (
        client.get(
            "/metrics/", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong"
        ).status_code
        == 404
    )
    with_token = client.get(
        "/metrics/", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-token"
    )
    assert with_token.status_code == 200
    assert with_token["Content-Type"].startswith("text/plain")
    assert client.get("/metrics/", REMOTE_ADDR="10.1.2.3").status_code == 200
    settings.RELAY_METRICS_TOKEN = ""
    assert client.get("/metrics/", REMOTE_ADDR="127.0.0.1").status_code == 404


def test_gauges_show_due_and_deferred_rows_per_brand_and_the_oldest_due_age(client, brand):
    project = brand.projects.first()
    project.stage = "active"
    project.save()
    for i in range(3):
        person = PersonFactory(brand=brand, phone=f"+1415555{3100 + i:04d}")
        ParticipantFactory(project=project, person=person)
    distribution = Distribution.objects.create(
        project=project, message="Hi", send_at=timezone.now(), status="in_progress"
    )
    from distributions.services import distribution_materialise

    distribution_materialise(distribution=distribution)
    rows = list(distribution.messages.order_by("pk"))
    now = timezone.now()
    Message.objects.filter(pk=rows[0].pk).update(due_at=now - timedelta(seconds=120))
    Message.objects.filter(pk=rows[1].pk).update(due_at=now + timedelta(hours=1))
    found = samples(client.get("/metrics/"))
    assert found[("relay_rows_pending", (("brand", brand.slug), ("state", "due")))] == 2
    assert found[("relay_rows_pending", (("brand", brand.slug), ("state", "deferred")))] == 1
    age = found[("relay_oldest_due_row_age_seconds", (("brand", brand.slug),))]
    assert 119 <= age < 600
    next_due = found[("relay_next_deferred_row_due_timestamp_seconds", (("brand", brand.slug),))]
    assert abs(next_due - (now + timedelta(hours=1)).timestamp()) < 1
    assert found[("relay_distributions_in_progress", (("brand", brand.slug),))] == 1


def test_counters_count_what_providers_answered(
    client, settings, brand, eager_tasks, django_capture_on_commit_callbacks
):
    if not settings.REDIS_URL:
        pytest.skip("counters are kept in Redis (REDIS_URL)")
    project = brand.projects.first()
    project.stage = "active"
    project.save()
    ProviderAccountFactory(brand=brand, provider="outbox", messages_per_second=0)
    for i in range(4):
        person = PersonFactory(brand=brand, phone=f"+1415555{3200 + i:04d}")
        ParticipantFactory(project=project, person=person)
    with django_capture_on_commit_callbacks(execute=True):
        distribution = distribution_create(project=project, message="Hello ${first_name}")
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT
    found = samples(client.get("/metrics/"))
    labels = (("brand", brand.slug), ("outcome", "accepted"), ("provider", "outbox"))
    assert found[("relay_messages_handed_over_total", labels)] == 4
    assert found[("relay_pump_batches_total", ())] >= 1
    assert found[("relay_pump_seconds_total", (("phase", "sending"),))] > 0


def test_the_sending_now_page_is_for_staff_only(client, tenancy, brand):
    project = brand.projects.first()
    distribution = Distribution.objects.create(
        project=project,
        message="Hi",
        send_at=timezone.now(),
        status="in_progress",
        started_at=timezone.now(),
    )
    client.force_login(tenancy.admin_a)  # a brand admin is not the platform's operator
    assert client.get("/ops/sending/").status_code == 404
    client.force_login(UserFactory(is_staff=True))
    page = client.get("/ops/sending/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="sending-now"' in html and str(distribution) in html and brand.name in html
    assert "/metrics/" in html  # where the counters are served
