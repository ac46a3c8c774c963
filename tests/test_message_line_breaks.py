"""Line breaks in message text are stored, counted, priced and sent as LF, on every path.

Browsers submit a textarea's line breaks as CR LF and count them as LF (the live counter and
the textarea's maxlength): a four-line 160-character message is one segment on the page, and
must be one segment in the estimate, the stored text, the recipient rows and what is sent.
"""

from __future__ import annotations

import re
from datetime import date

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.models import Brand
from credits.segments import count_segments, normalize_line_breaks
from distributions.models import Distribution, DistributionSeries, Message, OutboxMessage
from distributions.services import distribution_create
from projects.models import Project
from tests.factories.projects import ProjectFactory
from tests.test_distribution_pages import add, form_data, text, url

pytestmark = pytest.mark.django_db

LINES = ["a" * 40, "b" * 40, "c" * 40, "d" * 37]
TYPED = "\r\n".join(LINES)  # what the browser submits
STORED = "\n".join(LINES)  # what the counter counted: 160 characters, one segment
SOON = timezone.now() + timezone.timedelta(days=3)
LATER = SOON.isoformat()


def test_the_one_function():
    assert len(STORED) == 160 and count_segments(STORED) == 1
    assert len(TYPED) == 163 and count_segments(TYPED) == 2  # what used to be billed
    assert normalize_line_breaks(TYPED) == STORED
    assert normalize_line_breaks("a\rb\r\n\nc\n\r") == "a\nb\n\nc\n\n"


@pytest.fixture
def crowd(tenancy):
    """Three participants with a phone number, in a self-service brand (every send covered)."""
    tenancy.brand_a.integration_model = Brand.IntegrationModel.SELF_SERVICE
    tenancy.brand_a.save()
    tenancy.participant_a.delete()
    for first, phone in (
        ("Ada", "+14155550101"),
        ("Alan", "+447911123456"),
        ("Grace", "+14155550103"),
    ):
        add(tenancy.project_a, first, phone)


@pytest.fixture
def admin(tenancy, page_client_for):
    return page_client_for(tenancy.admin_a)


def test_the_schedule_form_stores_counts_and_sends_lf(
    tenancy,
    crowd,
    admin,
    eager_tasks,
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            url("create", tenancy.project_a.pk), form_data(name="Lines", message=TYPED)
        )
    assert response.status_code == 302
    distribution = Distribution.objects.get(name="Lines")
    assert distribution.message == STORED
    sent = Message.objects.filter(distribution=distribution).exclude(body="")
    assert sent.count() == 3
    assert {(m.body, m.segments) for m in sent} == {(STORED, 1)}
    assert set(OutboxMessage.objects.values_list("body", flat=True)) == {STORED}


def test_the_form_measures_its_length_limit_on_lf(tenancy, crowd, admin):
    # 1,600 characters as the browser counts them (its maxlength), 1,639 as submitted.
    lines = ["x" * 39] * 40
    response = admin.post(
        url("create", tenancy.project_a.pk),
        form_data(
            name="Long",
            message="\r\n".join(lines),
            when="later",
            send_date="2030-07-01",
            send_time="09:30",
        ),
    )
    assert response.status_code == 302, text(response)
    assert Distribution.objects.get(name="Long").message == "\n".join(lines)


def test_the_estimate_on_the_page_counts_lf(tenancy, crowd, admin):
    content = text(admin.post(url("preview_count", tenancy.project_a.pk), form_data(message=TYPED)))
    assert "3 messages · 3 segments" in content


def test_edit_and_bulk_edit_store_lf(tenancy, crowd, admin):
    scheduled = distribution_create(project=tenancy.project_a, message="Old", send_at=SOON)
    response = admin.post(
        url("edit", scheduled.pk),
        form_data(message=TYPED, when="later", send_date="2030-07-01", send_time="09:30"),
    )
    assert response.status_code == 302
    scheduled.refresh_from_db()
    assert scheduled.message == STORED

    other = distribution_create(project=tenancy.project_a, message="Old", send_at=SOON)
    response = admin.post(
        url("bulk_edit", tenancy.project_a.pk), {"ids": [other.pk], "message": "x\r\ny"}
    )
    assert response.status_code == 302, text(response)
    other.refresh_from_db()
    assert other.message == "x\ny"


def test_the_api_stores_lf_on_create_update_and_bulk_update(tenancy, api_a):
    created = api_a.post(
        "/api/v1/distributions/",
        {"project": tenancy.project_a.pk, "message": TYPED, "send_at": LATER},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["message"] == STORED
    pk = created.json()["id"]
    assert Distribution.objects.get(pk=pk).message == STORED

    updated = api_a.patch(f"/api/v1/distributions/{pk}/", {"message": "one\rtwo"}, format="json")
    assert updated.status_code == 200, updated.json()
    assert Distribution.objects.get(pk=pk).message == "one\ntwo"

    bulk = api_a.post(
        "/api/v1/distributions/bulk-edit/",
        {"ids": [pk], "message": "three\r\nfour"},
        format="json",
    )
    assert bulk.status_code == 200, bulk.json()
    assert Distribution.objects.get(pk=pk).message == "three\nfour"


def test_recurring_messages_store_lf(tenancy, api_a):
    lifecycle = ProjectFactory(brand=tenancy.brand_a, kind=Project.Kind.LIFECYCLE)
    created = api_a.post(
        reverse("api:series-list", args=[lifecycle.pk]),
        {
            "message": "Monthly pulse\r\n${link}",
            "frequency": "monthly",
            "day_of_month": 15,
            "time_of_day": "10:00",
            "starts_on": str(date(2030, 1, 1)),
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert DistributionSeries.objects.get(pk=created.json()["id"]).message == (
        "Monthly pulse\n${link}"
    )


def test_email_text_parts_store_lf(tenancy, api_a):
    response = api_a.post(
        "/api/v1/distributions/",
        {
            "project": tenancy.project_a.pk,
            "channel": "email",
            "message": "<p>Hi,\r\n<a href='${link}'>go</a> <a href='${opt_out_link}'>stop</a></p>",
            "text_body": "Hi,\r\ntake it: ${link}\r\nStop: ${opt_out_link}",
            "subject": "Hello",
            "send_at": LATER,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    distribution = Distribution.objects.get(pk=response.json()["id"])
    assert distribution.text_body == "Hi,\ntake it: ${link}\nStop: ${opt_out_link}"
    assert not re.search("\r", distribution.message)
