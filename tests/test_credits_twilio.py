"""End to end: a distribution sent through the Twilio-compatible fake server (the real SDK over
HTTP on 127.0.0.1) is debited per accepted message, and the licence usage report shows it."""

from decimal import Decimal

from django.urls import reverse

import pytest

from brands.models import Brand
from credits.models import CreditEntry
from credits.selectors import credits_balance, credits_consumed
from distributions.models import Distribution, Message, ProviderAccount
from distributions.services import distribution_create
from tests.factories.credits import CountryRateFactory, grant
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db(transaction=True)
K = CreditEntry.Kind
SENDER = "+15005550006"
PEOPLE = [
    ("Ada", "+14155557001"),
    ("Bartholomew-Maximilian", "+14155557002"),
    ("Chloé", "+447400123456"),
    ("Dmitri", "+4915112345678"),
]
# About 150 characters with a short name and the link: a long name needs a second segment.
TEXT = "Hi ${first_name}! " + "Tell us how your visit went, it takes two minutes. " * 2 + "${link}"
RATES = {"US": Decimal("1"), "GB": Decimal("1.5"), "DE": Decimal("2")}
COUNTRY = {"+14155557001": "US", "+14155557002": "US", "+447400123456": "GB"}
COUNTRY["+4915112345678"] = "DE"


@pytest.fixture
def fake():
    with FakeTwilio(callbacks=False) as server:
        yield server


@pytest.fixture
def sending(tenancy, fake, settings, eager_tasks):
    settings.TWILIO_API_BASE_URL = fake.base_url
    ProviderAccount.objects.create(
        brand=tenancy.brand_a,
        provider="twilio",
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        default_sender=SENDER,
        messages_per_second=1000,
    )
    for country, rate in RATES.items():
        CountryRateFactory(country=country, rate=rate)
    tenancy.participant_a.delete()
    for first, phone in PEOPLE:
        person = PersonFactory(brand=tenancy.brand_a, first_name=first, phone=phone)
        ParticipantFactory(project=tenancy.project_a, person=person)
    return tenancy


def test_report_shows_real_consumption_of_a_send_through_fake_twilio(
    sending, fake, page_client_for
):
    grant(sending.brand_a, 100)
    distribution = distribution_create(project=sending.project_a, message=TEXT)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason

    rows = list(distribution.messages.order_by("pk"))
    assert fake.stats()["accepted"] == len(rows) == 4
    debits = {e.message_id: e for e in CreditEntry.objects.filter(kind=K.DEBIT)}
    assert set(debits) == {row.pk for row in rows}
    for row in rows:
        sent = fake.messages_to(row.address)
        assert len(sent) == 1 and sent[0]["body"] == row.body
        assert debits[row.pk].segments == row.segments
    # The rendered text of each recipient decides: the long name takes one more segment.
    segments = {row.address: row.segments for row in rows}
    assert segments["+14155557002"] == segments["+14155557001"] + 1
    consumed = sum(RATES[COUNTRY[address]] * count for address, count in segments.items())
    by_country = {}
    for address, count in segments.items():
        country = COUNTRY[address]
        by_country[country] = by_country.get(country, 0) + RATES[country] * count
    balance = credits_balance(brand=sending.brand_a)
    assert balance.balance == 100 - consumed and balance.reserved == 0

    page = page_client_for(sending.admin_a).get(reverse("credits:usage"))
    assert page.status_code == 200
    report = page.context["report"]
    assert report["consumed"] == consumed and report["messages"] == 4
    assert report["segments"] == sum(segments.values())
    assert report["remaining"] == 100 - consumed
    assert {row["country"]: row["credits"] for row in report["by_country"]} == by_country
    assert report["by_project"][0]["project"] == "Alpha pulse"
    assert sum(page.context["chart"]["credits"]) == float(consumed)
    html = page.content.decode()
    assert f'id="credits-consumed">{consumed.normalize():f}<' in html
    assert f'id="credits-remaining">{(100 - consumed).normalize():f}<' in html

    # The distribution's own figure (its page and API) and the usage API agree.
    assert credits_consumed(distribution=distribution) == consumed
    api = page_client_for(sending.admin_a).get(reverse("api:credit-usage"))
    assert Decimal(api.json()["consumed"]) == consumed


def test_self_service_usage_through_fake_twilio_is_reported_without_debits(
    sending, fake, page_client_for
):
    Brand.objects.filter(pk=sending.brand_a.pk).update(
        integration_model=Brand.IntegrationModel.SELF_SERVICE
    )
    distribution = distribution_create(project=sending.project_a, message=TEXT)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason
    assert fake.stats()["accepted"] == 4
    assert not CreditEntry.objects.filter(kind=K.DEBIT).exists()
    usage = CreditEntry.objects.filter(kind=K.USAGE)
    segments = sum(distribution.messages.values_list("segments", flat=True))
    assert usage.count() == 4 and sum(e.segments for e in usage) == segments > 4
    page = page_client_for(sending.admin_a).get(reverse("credits:usage"))
    report = page.context["report"]
    assert report["self_service"] is True
    assert report["messages"] == 4 and report["segments"] == segments
    assert report["consumed"] == 0
    assert "its provider bills it" in page.content.decode()
    assert Message.objects.filter(status__in=Message.HANDED_OVER).count() == 4
