"""Opt-out pages and API: list with search and filters, CSV export, person section, replies,
the distribution's opt-out count, and tenancy everywhere."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from django.urls import reverse

import pytest

from brands.roles import Role
from distributions.models import Distribution, Message
from distributions.selectors import distribution_metrics
from distributions.services import distribution_materialise
from optouts.models import InboundMessage, OptOut, OptOutEvent
from optouts.services import optout_create_by_admin, optout_record
from tests.factories.brands import ApiKeyFactory
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.test_optout_support import (
    SENDER_A,
    TOKEN_A,
    configure_numbers,
    inbound_params,
    post_inbound,
    sent_message,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(tenancy, client, settings):
    """Brand A: a STOP reply, a late STOP (provider level), an admin opt-out of an email, an
    opted-in one; brand B: one opt-out that must never show in brand A."""
    configure_numbers(tenancy, settings)
    ada = PersonFactory(
        brand=tenancy.brand_a, first_name="Ada", last_name="Lovelace", phone="+14155550101"
    )
    sent_message(tenancy.project_a, ada.phone, person=ada)
    post_inbound(client, inbound_params(from_=ada.phone, to=SENDER_A, body="STOP"), token=TOKEN_A)
    late = sent_message(tenancy.project_a, "+14155550102", ago=timedelta(days=5))
    post_inbound(
        client, inbound_params(from_=late.address, to=SENDER_A, body="Arrêt"), token=TOKEN_A
    )
    post_inbound(
        client, inbound_params(from_=ada.phone, to=SENDER_A, body="thanks!"), token=TOKEN_A
    )
    evil = PersonFactory(
        brand=tenancy.brand_a, first_name='=HYPERLINK("http://x")', email="evil@example.com"
    )
    optout_create_by_admin(
        brand=tenancy.brand_a,
        channel="email",
        address=evil.email,
        reason="Asked by email",
        actor=tenancy.admin_a,
    )
    gone = optout_record(
        brand_id=tenancy.brand_a.pk, channel="sms", address="+14155550103", source="link"
    )
    OptOut.objects.filter(pk=gone.pk).update(active=False)
    optout_record(
        brand_id=tenancy.brand_b.pk, channel="sms", address="+14155550999", source="reply"
    )
    return {"ada": ada, "late": late, "evil": evil}


def addresses(response) -> set[str]:
    return {optout.address for optout in response.context["page"].object_list}


def test_list_search_and_filters(tenancy, book, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    url = reverse("optouts:list")
    page = client.get(url)
    assert page.status_code == 200
    assert addresses(page) == {"+14155550101", "+14155550102", "evil@example.com"}
    assert b"+14155550999" not in page.content  # brand B's
    assert addresses(client.get(url, {"q": "lovelace"})) == {"+14155550101"}
    assert addresses(client.get(url, {"q": "0102"})) == {"+14155550102"}
    assert addresses(client.get(url, {"source": "admin"})) == {"evil@example.com"}
    assert addresses(client.get(url, {"scope": "provider"})) == {"+14155550102"}
    assert addresses(client.get(url, {"channel": "email"})) == {"evil@example.com"}
    assert addresses(client.get(url, {"state": "opted_in"})) == {"+14155550103"}
    assert len(addresses(client.get(url, {"state": "all"}))) == 4
    assert addresses(client.get(url, {"source": "nonsense", "state": "x"})) == addresses(page)
    assert b"Provider level only" in page.content
    assert b">Opt-outs</a>" in page.content  # the nav section


def test_csv_export_streams_is_filtered_and_formula_safe(tenancy, book, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    response = client.get(reverse("optouts:list"), {"export": "csv", "state": "all"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == ["Address", "Channel", "Status", "Source", "Scope"]
    by_address = {row[0]: row for row in rows[1:]}
    assert set(by_address) == {
        "+14155550101",
        "+14155550102",
        "+14155550103",
        "evil@example.com",
    }
    assert by_address["+14155550101"][3:5] == ["STOP reply", "Directory (Opted out: Yes)"]
    assert by_address["+14155550102"][4] == "Provider level only"
    assert by_address["+14155550103"][2] == "Opted in"
    assert by_address["evil@example.com"][6].startswith("'=HYPERLINK")  # neutralised
    filtered = client.get(reverse("optouts:list"), {"export": "csv", "source": "admin"})
    lines = b"".join(filtered.streaming_content).decode("utf-8-sig").strip().splitlines()
    assert len(lines) == 2 and "evil@example.com" in lines[1]


def test_detail_shows_the_audit_trail(tenancy, book, page_client_for):
    optout = OptOut.objects.get(address="+14155550101")
    page = page_client_for(tenancy.viewer_a).get(reverse("optouts:detail", args=[optout.pk]))
    text = page.content.decode()
    assert "Audit trail" in text and "STOP reply" in text and "The recipient" in text
    assert "“STOP”" in text and "within 2 days" in text


def test_person_page_shows_the_opt_out_and_history(tenancy, book, page_client_for):
    ada = book["ada"]
    url = reverse("participants:person", args=[ada.pk])
    viewer = page_client_for(tenancy.viewer_a).get(url).content.decode()
    assert 'id="person-optouts"' in viewer and "Opted out" in viewer
    assert "Opted out</dt><dd>Yes" in viewer.replace("\n", "")  # the metadata field
    assert "opt-in-form" not in viewer
    admin = page_client_for(tenancy.admin_a).get(url).content.decode()
    assert "opt-in-form" in admin and "History" in admin


def test_person_page_without_opt_outs(tenancy, page_client_for):
    person = tenancy.participant_a.person
    page = page_client_for(tenancy.admin_a).get(reverse("participants:person", args=[person.pk]))
    assert b"Not opted out of any channel." in page.content


def test_inbound_replies_page(tenancy, book, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    page = client.get(reverse("optouts:inbound"))
    text = page.content.decode()
    assert "thanks!" in text and "Arrêt" in text
    assert "Opted out at the provider level only" in text
    only_other = client.get(reverse("optouts:inbound"), {"kind": "OTHER"})
    assert [m.body for m in only_other.context["page"].object_list] == ["thanks!"]
    assert client.get(reverse("optouts:inbound"), {"q": "arr"}).context["page"].paginator.count == 1


def test_other_brand_sees_nothing(tenancy, book, page_client_for):
    client = page_client_for(tenancy.admin_b)
    page = client.get(reverse("optouts:list"))
    assert addresses(page) == {"+14155550999"}
    assert client.get(reverse("optouts:inbound")).context["page"].paginator.count == 0
    csv_text = b"".join(
        client.get(reverse("optouts:list"), {"export": "csv", "state": "all"}).streaming_content
    ).decode("utf-8-sig")
    assert "+14155550101" not in csv_text and "+14155550999" in csv_text
    ada = book["ada"]
    assert client.get(reverse("participants:person", args=[ada.pk])).status_code == 404


def test_admin_opt_out_form(tenancy, page_client_for):
    viewer = page_client_for(tenancy.viewer_a)
    data = {"channel": "sms", "address": "415 555 0177", "reason": "Phoned us"}
    assert viewer.post(reverse("optouts:create"), data).status_code == 403
    admin = page_client_for(tenancy.project_admin_a)
    response = admin.post(reverse("optouts:create"), data)
    optout = OptOut.objects.get()
    assert response.status_code == 302 and optout.address == "+14155550177"
    bad = admin.post(reverse("optouts:create"), {**data, "address": "nope"}, follow=True)
    assert b"not a phone number" in bad.content


# --- API ----------------------------------------------------------------------------------
def test_api_list_filters_and_retrieve(tenancy, book, api_client_for):
    client = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER))
    listed = client.get("/api/v1/optouts/").json()
    assert {row["address"] for row in listed["results"]} == {
        "+14155550101",
        "+14155550102",
        "evil@example.com",
    }
    scoped = client.get("/api/v1/optouts/", {"scope": "provider"}).json()["results"]
    assert [row["address"] for row in scoped] == ["+14155550102"]
    assert client.get("/api/v1/optouts/", {"state": "all"}).json()["count"] == 4
    assert client.get("/api/v1/optouts/", {"q": "Lovelace"}).json()["count"] == 1
    ada_optout = OptOut.objects.get(address="+14155550101")
    detail = client.get(f"/api/v1/optouts/{ada_optout.pk}/").json()
    assert detail["person_id"] == book["ada"].person_id
    assert detail["events"][0]["source"] == "reply" and detail["events"][0]["message"]
    other = OptOut.objects.get(brand=tenancy.brand_b)
    assert client.get(f"/api/v1/optouts/{other.pk}/").status_code == 404
    events = client.get("/api/v1/optout-events/", {"address": "+14155550101"}).json()
    assert events["count"] == 1 and events["results"][0]["who"] == "The recipient"
    foreign_event = OptOutEvent.objects.get(brand=tenancy.brand_b)
    assert client.get(f"/api/v1/optout-events/{foreign_event.pk}/").status_code == 404


def test_api_inbound_messages(tenancy, book, api_client_for):
    client = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER))
    listed = client.get("/api/v1/inbound-messages/").json()
    assert listed["count"] == 3
    stops = client.get("/api/v1/inbound-messages/", {"kind": "STOP"}).json()["results"]
    assert {row["action"] for row in stops} == {"opted_out", "opted_out_provider"}
    assert {row["language"] for row in stops} == {"en", "fr"}
    foreign = InboundMessage.objects.create(
        brand=tenancy.brand_b, from_number="+1", action="stored"
    )
    assert client.get(f"/api/v1/inbound-messages/{foreign.pk}/").status_code == 404
    other = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_b))
    assert other.get("/api/v1/inbound-messages/").json()["count"] == 1


def test_api_record_an_opt_out(tenancy, api_client_for):
    viewer = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER))
    data = {"channel": "sms", "address": "+14155550177", "reason": "Phoned us"}
    assert viewer.post("/api/v1/optouts/", data, format="json").status_code == 403
    client = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a))
    created = client.post("/api/v1/optouts/", data, format="json")
    assert created.status_code == 201 and created.json()["source"] == "admin"
    assert client.post("/api/v1/optouts/", {**data, "brand": 2}, format="json").status_code == 400
    bad = client.post("/api/v1/optouts/", {**data, "address": "12"}, format="json")
    assert bad.status_code == 400 and "address" in bad.json()["error"]["fields"]
    assert not OptOut.objects.filter(brand=tenancy.brand_b).exists()


def test_distribution_opt_out_count(tenancy, page_client_for):
    """The distribution page's metrics count Skipped (opt-out) rows, and only those."""
    project = tenancy.project_a
    tenancy.participant_a.delete()
    for i in range(5):
        ParticipantFactory(
            project=project, person=PersonFactory(brand=project.brand, phone=f"+1415555020{i}")
        )
    for i in (0, 1):
        optout_record(
            brand_id=project.brand_id, channel="sms", address=f"+1415555020{i}", source="reply"
        )
    optout_record(brand_id=tenancy.brand_b.pk, channel="sms", address="+14155550202", source="x")
    distribution = DistributionFactory(project=project, status=Distribution.Status.IN_PROGRESS)
    distribution_materialise(distribution=distribution)
    metrics = distribution_metrics(distribution=distribution)
    assert metrics["skipped_optout"] == 2 and metrics["pending"] == 3
    statuses = distribution.messages.values_list("status", flat=True)
    assert sorted(statuses).count(Message.Status.SKIPPED_OPTOUT) == 2
    page = page_client_for(tenancy.viewer_a).get(
        reverse("distributions:detail", args=[distribution.pk])
    )
    assert b'data-metric="skipped_optout">2<' in page.content
