"""Opt-in (brand admins only, with a reason) and the audit trail of every opt-out and opt-in."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

import pytest

from brands.roles import Role
from distributions.models import Distribution, Message
from distributions.services import distribution_materialise, message_status_ingest
from optouts.models import OptOut, OptOutEvent, Scope, Source
from optouts.services import optout_create_by_admin, optout_opt_in, optout_record_link
from tests.factories.brands import ApiKeyFactory
from tests.factories.distributions import DistributionFactory
from tests.test_optout_support import (
    SENDER_A,
    TOKEN_A,
    configure_numbers,
    inbound_params,
    post_inbound,
    sent_message,
)

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"


@pytest.fixture
def opted_out(tenancy, client, settings):
    """Ada replied STOP an hour after our message."""
    configure_numbers(tenancy, settings)
    message = sent_message(tenancy.project_a, PHONE)
    post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="STOP"), token=TOKEN_A)
    return OptOut.objects.get(), message


@pytest.mark.parametrize("role", [Role.PROJECT_ADMIN, Role.VIEWER, None])
def test_only_a_brand_admin_may_opt_in(opted_out, role):
    optout, _ = opted_out
    with pytest.raises(PermissionDenied):
        optout_opt_in(optout=optout, reason="asked by phone", role=role)
    optout.refresh_from_db()
    assert optout.active


@pytest.mark.parametrize("reason", ["", "   "])
def test_opt_in_needs_a_reason(opted_out, reason):
    optout, _ = opted_out
    with pytest.raises(ValidationError) as excinfo:
        optout_opt_in(optout=optout, reason=reason, role=Role.BRAND_ADMIN)
    assert "reason" in excinfo.value.message_dict
    optout.refresh_from_db()
    assert optout.active


def test_opt_in_lifts_the_opt_out_and_clears_the_directory(tenancy, opted_out):
    optout, message = opted_out
    optout_opt_in(
        optout=optout, reason="Asked us by email", role=Role.BRAND_ADMIN, actor=tenancy.admin_a
    )
    optout.refresh_from_db()
    assert not optout.active and optout.opted_in_at is not None
    person = message.person
    person.refresh_from_db()
    assert person.metadata["Opted out"] == "No"
    assert person.participations.get().metadata["Opted out"] == "No"
    event = OptOutEvent.objects.get(action=OptOutEvent.Action.OPT_IN)
    assert (event.actor, event.reason, event.source) == (
        tenancy.admin_a,
        "Asked us by email",
        Source.ADMIN,
    )
    with pytest.raises(ValidationError):
        optout_opt_in(optout=optout, reason="again", role=Role.BRAND_ADMIN)
    # The next distribution messages the number again.
    distribution = DistributionFactory(
        project=tenancy.project_a, status=Distribution.Status.IN_PROGRESS
    )
    distribution_materialise(distribution=distribution)
    assert distribution.messages.get(person=person).status == Message.Status.PENDING


def test_a_new_opt_out_after_an_opt_in_is_a_new_row(tenancy, opted_out, client):
    optout, message = opted_out
    optout_opt_in(optout=optout, reason="ok", role=Role.BRAND_ADMIN)
    post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="QUIT"), token=TOKEN_A)
    assert OptOut.objects.filter(address=PHONE).count() == 2
    assert OptOut.objects.filter(address=PHONE, active=True).count() == 1


def test_the_audit_trail_says_who_when_how_and_what_it_answered(tenancy, opted_out, client):
    optout, message = opted_out
    optout_opt_in(optout=optout, reason="Called us", role=Role.BRAND_ADMIN, actor=tenancy.admin_a)
    # Opens the opt-out link of the same message.
    optout_record_link(message=message)
    optout_opt_in(
        optout=OptOut.objects.get(active=True),
        reason="Second thoughts",
        role=Role.BRAND_ADMIN,
        actor=tenancy.admin_a,
    )
    # The carrier refuses a later message: 21610.
    later = sent_message(tenancy.project_a, PHONE, person=message.person, status="sent")
    message_status_ingest(
        provider="twilio",
        provider_id=later.provider_id,
        provider_status="failed",
        error_code="21610",
    )
    later.refresh_from_db()
    assert later.status == Message.Status.BLOCKED
    # An admin records one for another person.
    optout_create_by_admin(
        brand=tenancy.brand_a,
        channel="sms",
        address="(415) 555-0199",
        reason="Asked at the front desk",
        actor=tenancy.project_admin_a,
    )

    trail = list(
        OptOutEvent.objects.for_brand(tenancy.brand_a)
        .order_by("created_at", "pk")
        .values_list("action", "source", "address")
    )
    assert trail == [
        ("opt_out", Source.REPLY, PHONE),
        ("opt_in", Source.ADMIN, PHONE),
        ("opt_out", Source.LINK, PHONE),
        ("opt_in", Source.ADMIN, PHONE),
        ("opt_out", Source.PROVIDER, PHONE),
        ("opt_out", Source.ADMIN, "+14155550199"),
    ]
    events = OptOutEvent.objects.filter(address=PHONE).order_by("created_at", "pk")
    reply, _, link, _, provider = events
    assert reply.message == message and reply.inbound.body == "STOP"
    assert reply.actor_label == "The recipient" and link.message == message
    assert provider.message == later and provider.actor_label == "The provider"
    assert events[1].actor_label == "admin_a"
    admin = OptOutEvent.objects.get(address="+14155550199")
    assert admin.actor == tenancy.project_admin_a and admin.reason == "Asked at the front desk"
    assert not OptOutEvent.objects.for_brand(tenancy.brand_b).exists()


# --- the opt-in page and API ----------------------------------------------------------------
def test_opt_in_page_is_for_brand_admins(tenancy, opted_out, page_client_for):
    optout, message = opted_out
    url = reverse("optouts:opt-in", args=[optout.pk])
    for user in (tenancy.viewer_a, tenancy.project_admin_a):
        client = page_client_for(user)
        assert client.post(url, {"reason": "please"}).status_code == 403
        detail = client.get(reverse("optouts:detail", args=[optout.pk]))
        assert b"opt-in-form" not in detail.content
    client = page_client_for(tenancy.admin_a)
    assert b"opt-in-form" in client.get(reverse("optouts:detail", args=[optout.pk])).content
    response = client.post(url, {"reason": ""}, follow=True)
    assert b"Say why this person is opted back in." in response.content
    optout.refresh_from_db()
    assert optout.active
    person_url = reverse("participants:person", args=[message.person_id])
    response = client.post(url, {"reason": "Asked by email", "next": person_url})
    assert response.status_code == 302 and response["Location"] == person_url
    optout.refresh_from_db()
    assert not optout.active


def test_opt_in_page_of_another_brand_is_404(tenancy, opted_out, page_client_for):
    optout, _ = opted_out
    client = page_client_for(tenancy.admin_b)
    response = client.post(reverse("optouts:opt-in", args=[optout.pk]), {"reason": "x"})
    assert response.status_code == 404
    assert client.get(reverse("optouts:detail", args=[optout.pk])).status_code == 404
    optout.refresh_from_db()
    assert optout.active


def test_opt_in_redirect_stays_on_site(tenancy, opted_out, page_client_for):
    optout, _ = opted_out
    client = page_client_for(tenancy.admin_a)
    response = client.post(
        reverse("optouts:opt-in", args=[optout.pk]),
        {"reason": "ok", "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("optouts:detail", args=[optout.pk])


def test_opt_in_api(tenancy, opted_out, api_client_for):
    optout, _ = opted_out
    url = f"/api/v1/optouts/{optout.pk}/opt-in/"
    project_admin = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a))
    assert project_admin.post(url, {"reason": "x"}, format="json").status_code == 403
    other = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_b, role=Role.BRAND_ADMIN))
    assert other.post(url, {"reason": "x"}, format="json").status_code == 404
    key = ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN, name="HR sync")
    admin = api_client_for(api_key=key)
    missing = admin.post(url, {}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()["error"]["fields"]
    blank = admin.post(url, {"reason": " "}, format="json")
    assert blank.status_code == 400
    unknown = admin.post(url, {"reason": "ok", "active": True}, format="json")
    assert unknown.status_code == 400
    done = admin.post(url, {"reason": "Re-consented in the HR portal"}, format="json")
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["active"] is False and body["opted_in_at"]
    assert body["events"][0]["action"] == "opt_in"
    assert body["events"][0]["who"] == "API key HR sync"
    assert body["events"][0]["api_key"] == key.prefix
    # Already opted back in: the optout's state refuses it (409), the request itself is fine.
    assert admin.post(url, {"reason": "again"}, format="json").status_code == 409


def test_opting_in_a_late_stop_keeps_the_directory_consistent(tenancy, client, settings):
    configure_numbers(tenancy, settings)
    message = sent_message(tenancy.project_a, PHONE, ago=timedelta(days=3))
    post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="STOP"), token=TOKEN_A)
    optout = OptOut.objects.get()
    assert optout.scope == Scope.PROVIDER
    optout_opt_in(optout=optout, reason="Texted START and asked us", role=Role.BRAND_ADMIN)
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "No"
