"""Stalled sends (issue 22, item 6): a distribution In progress with nothing handed over for an
hour, or In progress for more than 7 days, is flagged on its page, with a badge in the lists and
in /metrics/, with what holds it, read from its rows, its lane and its sender; the list costs
the same number of queries whatever the number of stalled distributions on the page."""

from __future__ import annotations

import html
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, Sender, SendLane
from distributions.stalls import Holding, Why, distribution_stalls
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.test_metrics import samples

pytestmark = pytest.mark.django_db
M = Message.Status


def running(project, *, started_ago: timedelta, **kwargs) -> Distribution:
    now = timezone.now()
    return DistributionFactory(
        project=project,
        status=Distribution.Status.IN_PROGRESS,
        send_at=now - started_ago,
        started_at=now - started_ago,
        **kwargs,
    )


def sender_for(brand, *, key: str, ready_in: timedelta, reason: str = "", rate: int = 10):
    now = timezone.now()
    return Sender.objects.create(
        key=key,
        brand=brand,
        rate=rate,
        tokens_at=now,
        ready_at=now + ready_in,
        paused_reason=reason,
        served_at=now,
    )


def lane(distribution, sender, *, ready_in: timedelta | None = timedelta(0)):
    now = timezone.now()
    return SendLane.objects.create(
        distribution=distribution,
        brand=distribution.project.brand,
        sender=sender,
        ready_at=None if ready_in is None else now + ready_in,
        served_at=now,
    )


@pytest.fixture
def stuck(tenancy):
    """Brand A's distribution started two hours ago, nothing handed over since: one row
    Failed for want of credits, one refused by the provider, one deferred for three hours;
    its sender paused by the provider (HTTP 429)."""
    now = timezone.now()
    distribution = running(tenancy.project_a, started_ago=timedelta(hours=2))
    MessageFactory(
        distribution=distribution, status=M.FAILED, status_reason=Message.REASON_NO_CREDITS
    )
    MessageFactory(distribution=distribution, status=M.FAILED, error_code="30007")
    MessageFactory(distribution=distribution, due_at=now + timedelta(hours=3))
    sender = sender_for(
        tenancy.brand_a, key="a:+14155550000", ready_in=timedelta(minutes=5), reason="HTTP 429"
    )
    lane(distribution, sender, ready_in=timedelta(hours=3))
    return distribution


def test_a_send_with_no_hand_over_for_an_hour_is_stalled_with_what_holds_it(stuck):
    stall = distribution_stalls(distributions=[stuck])[stuck.pk]
    assert stall.why == Why.NO_HANDOVER
    assert stall.since == stuck.started_at
    assert stall.holding == (
        Holding.CREDITS,
        Holding.PROVIDER_ERRORS,
        Holding.SENDER_PAUSED,
        Holding.WAITING_ROWS,
    )
    assert "not enough credits" in stall.summary and "HTTP 429" in stall.summary


def test_what_is_not_stalled_and_what_is_stalled_for_being_too_long(tenancy):
    now = timezone.now()
    project = tenancy.project_a
    young = running(project, started_ago=timedelta(minutes=30))
    MessageFactory(distribution=young)
    busy = running(project, started_ago=timedelta(hours=3))
    MessageFactory(distribution=busy, status=M.SENT, sent_at=now - timedelta(minutes=10))
    MessageFactory(distribution=busy)
    trigger = running(project, started_ago=timedelta(days=30), trigger="completion")
    finished = DistributionFactory(
        project=project, status=Distribution.Status.SENT, started_at=now - timedelta(days=9)
    )
    old = running(project, started_ago=timedelta(days=8))
    MessageFactory(distribution=old, status=M.SENT, sent_at=now - timedelta(minutes=1))
    MessageFactory(distribution=old, status=M.SENDING)
    throttled = running(project, started_ago=timedelta(hours=2))
    MessageFactory(distribution=throttled)
    lane(throttled, sender_for(tenancy.brand_a, key="a:slow", ready_in=timedelta(seconds=30)))
    forgotten = running(project, started_ago=timedelta(hours=2))
    MessageFactory(distribution=forgotten)
    unserved = running(project, started_ago=timedelta(hours=2))
    MessageFactory(distribution=unserved)
    lane(unserved, sender_for(tenancy.brand_a, key="a:idle", ready_in=-timedelta(hours=1)))

    stalls = distribution_stalls(
        distributions=[young, busy, trigger, finished, old, throttled, forgotten, unserved]
    )

    assert set(stalls) == {old.pk, throttled.pk, forgotten.pk, unserved.pk}
    assert stalls[old.pk].why == Why.TOO_LONG and stalls[old.pk].holding == (Holding.IN_FLIGHT,)
    assert stalls[throttled.pk].holding == (Holding.SENDER_THROTTLED,)
    assert stalls[forgotten.pk].holding == (Holding.NOT_QUEUED,)
    assert stalls[unserved.pk].holding == (Holding.NO_WORKER,)


def test_the_api_detail_says_it_is_stalled(stuck, api_a):
    body = api_a.get(reverse("api:distribution-detail", args=[stuck.pk])).json()
    assert body["stalled"]["why"] == "no_handover"
    assert body["stalled"]["holding"] == [
        "insufficient_credits",
        "provider_errors",
        "sender_paused",
        "waiting_rows",
    ]
    assert len(body["stalled"]["details"]) == 4


def test_the_distribution_page_says_it_is_stalled_and_why(stuck, page_client_for, tenancy):
    client = page_client_for(tenancy.viewer_a)
    page = html.unescape(
        client.get(reverse("distributions:detail", args=[stuck.pk])).content.decode()
    )
    assert 'id="stalled"' in page
    assert "Nothing handed to the provider for more than an hour." in page
    assert "not enough credits" in page and "HTTP 429" in page and "wait until" in page
    live = html.unescape(
        client.get(reverse("distributions:live", args=[stuck.pk])).content.decode()
    )
    assert 'id="stalled"' in live


def test_the_lists_badge_stalled_sends_in_a_fixed_number_of_queries(
    stuck, page_client_for, tenancy
):
    client = page_client_for(tenancy.admin_a)
    fine = running(tenancy.project_a, started_ago=timedelta(minutes=5))
    other = running(tenancy.project_b, started_ago=timedelta(days=8))  # brand B's: never shown

    page = html.unescape(client.get(reverse("distributions:list")).content.decode())
    assert page.count('data-stalled="insufficient_credits"') == 1
    assert f'href="/distributions/{fine.pk}/"' in page
    assert f'href="/distributions/{other.pk}/"' not in page
    tab = client.get(reverse("distributions:project_sms", args=[tenancy.project_a.pk]))
    assert b'data-stalled="insufficient_credits"' in tab.content

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("distributions:list")).status_code == 200
        return len(captured)

    before = list_queries()
    for _ in range(4):
        more = running(tenancy.project_a, started_ago=timedelta(hours=5))
        MessageFactory(distribution=more)
    after = list_queries()
    assert after == before
    listed = client.get(reverse("distributions:list")).content.decode()
    assert listed.count('class="badge badge-stalled"') == 5


def test_metrics_count_stalled_sends_per_brand_and_cause(client, stuck, tenancy):
    other = running(tenancy.project_b, started_ago=timedelta(days=8))
    MessageFactory(distribution=other, status=M.SENDING)
    found = samples(client.get("/metrics/"))
    key = ("relay_distributions_stalled", (("brand", "alpha"), ("holding", "insufficient_credits")))
    assert found[key] == 1
    assert (
        found[("relay_distributions_stalled", (("brand", "beta"), ("holding", "in_flight")))] == 1
    )
    seconds = found[
        (
            "relay_distribution_stalled_seconds",
            (
                ("brand", "alpha"),
                ("distribution", str(stuck.pk)),
                ("holding", "insufficient_credits"),
            ),
        )
    ]
    assert 7100 < seconds < 7400
