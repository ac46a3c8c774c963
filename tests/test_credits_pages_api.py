"""The licence usage report, the ledger and grants: pages and API, roles and tenancy."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.roles import Role
from credits.models import CreditEntry, CreditReservation
from credits.selectors import credits_balance
from tests.conftest import make_api_client
from tests.factories.brands import ApiKeyFactory
from tests.factories.credits import grant
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.projects import ProjectFactory

pytestmark = pytest.mark.django_db
K = CreditEntry.Kind


def debit(distribution, *, country="US", segments=1, rate="1", when=None):
    """A debit row as the engine writes it (for report tests that need no real send)."""
    brand = distribution.project.brand
    reservation, _ = CreditReservation.objects.get_or_create(
        distribution=distribution, defaults={"brand": brand, "project": distribution.project}
    )
    message = MessageFactory(distribution=distribution, status="sent")
    cost = Decimal(rate) * segments
    return CreditEntry.objects.create(
        brand=brand,
        kind=K.DEBIT,
        amount=-cost,
        held=0,
        reservation=reservation,
        distribution=distribution,
        project=distribution.project,
        message=message,
        country=country,
        segments=segments,
        rate=Decimal(rate),
        created_at=when or timezone.now(),
    )


@pytest.fixture
def usage(tenancy):
    """Alpha: 100 credits, 3 messages this month in two projects; Beta: its own usage."""
    grant(tenancy.brand_a, 100)
    other = ProjectFactory(brand=tenancy.brand_a, name='=HYPERLINK("http://evil")')
    first = DistributionFactory(project=tenancy.project_a)
    second = DistributionFactory(project=other)
    debit(first, country="US", segments=2, rate="1")
    debit(first, country="GB", segments=1, rate="1.5")
    debit(second, country="US", segments=1, rate="1")
    grant(tenancy.brand_b, 50)
    debit(DistributionFactory(project=tenancy.project_b), country="FR", segments=3, rate="2")
    return {"first": first, "second": second, "other": other}


def brand_admin_api(tenancy):
    return make_api_client(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN))


# --- API ----------------------------------------------------------------------------------------
def test_balance_is_readable_by_any_member_and_scoped(tenancy, usage, api_a, api_client_for):
    answer = api_a.get(reverse("api:credit-balance"))
    assert answer.status_code == 200
    assert answer.json() == {
        "balance": "95.5000",
        "reserved": "0.0000",
        "available": "95.5000",
        "self_service": False,
    }
    viewer = api_client_for(user=tenancy.viewer_a).get(reverse("api:credit-balance"))
    assert viewer.status_code == 200
    beta = api_client_for(user=tenancy.admin_b).get(reverse("api:credit-balance"))
    assert beta.json()["balance"] == "44.0000"


def test_usage_report_api_gives_the_figures_of_the_brand_only(tenancy, usage):
    answer = brand_admin_api(tenancy).get(reverse("api:credit-usage"))
    assert answer.status_code == 200
    report = answer.json()
    assert report["consumed"] == "4.5000"
    assert report["messages"] == 3 and report["segments"] == 4
    assert report["remaining"] == "95.5000"
    assert {row["country"]: row["credits"] for row in report["by_country"]} == {
        "US": "3.0000",
        "GB": "1.5000",
    }
    assert {row["project"]: row["credits"] for row in report["by_project"]} == {
        "Alpha pulse": "3.5000",
        usage["other"].name: "1.0000",
    }
    today = timezone.now().date().isoformat()
    assert [day for day in report["by_day"] if day["messages"]] == [
        {"date": today, "messages": 3, "segments": 4, "credits": "4.5000"}
    ]


def test_usage_report_api_period_and_bad_dates(tenancy, usage):
    client = brand_admin_api(tenancy)
    old = timezone.now() - timedelta(days=40)
    debit(usage["first"], when=old)
    day = old.date()
    answer = client.get(reverse("api:credit-usage"), {"start": day, "end": day})
    assert answer.json()["consumed"] == "1.0000"
    assert len(answer.json()["by_day"]) == 1
    bad = client.get(reverse("api:credit-usage"), {"start": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"]["start"] == "'yesterday' is not a date (YYYY-MM-DD)."
    backwards = client.get(
        reverse("api:credit-usage"), {"start": "2026-02-01", "end": "2026-01-01"}
    )
    assert backwards.status_code == 400
    too_long = client.get(reverse("api:credit-usage"), {"start": "2020-01-01", "end": "2026-01-01"})
    assert too_long.status_code == 400


@pytest.mark.parametrize("role", [Role.VIEWER, Role.PROJECT_ADMIN])
def test_viewers_and_project_admins_cannot_grant_or_read_usage(tenancy, usage, role):
    client = make_api_client(user=tenancy.user_for(role))
    assert client.get(reverse("api:credit-usage")).status_code == 403
    assert client.get(reverse("api:credit-entries")).status_code == 403
    answer = client.post(reverse("api:credit-grants"), {"amount": "1000"}, format="json")
    assert answer.status_code == 403
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("95.5")


def test_brand_admin_grants_through_the_api_once_per_idempotency_key(tenancy):
    client = brand_admin_api(tenancy)
    url = reverse("api:credit-grants")
    first = client.post(
        url, {"amount": "250", "note": "PO 7"}, format="json", HTTP_IDEMPOTENCY_KEY="po-7"
    )
    assert first.status_code == 201
    body = first.json()
    assert body["kind"] == "purchase" and body["amount"] == "250.0000"
    assert body["balance"]["available"] == "250.0000"
    again = client.post(url, {"amount": "250"}, format="json", HTTP_IDEMPOTENCY_KEY="po-7")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("250")
    assert credits_balance(brand=tenancy.brand_b).balance == 0


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"amount": "-10"}, "amount", "Credits to add must be a positive number."),
        ({"amount": "ten"}, "amount", "'ten' is not a number."),
        ({"amount": "0"}, "amount", "Enter a number of credits other than zero."),
        ({"amount": "1.00001"}, "amount", "Use at most 4 decimal places."),
        ({"amount": "5", "kind": "debit"}, "kind", '"debit" is not a valid choice.'),
        ({"amount": "5", "brand": 2}, "brand", "Unknown field."),
        ({}, "amount", "This field is required."),
    ],
)
def test_bad_grants_through_the_api_are_clear_and_write_nothing(tenancy, payload, field, message):
    answer = brand_admin_api(tenancy).post(reverse("api:credit-grants"), payload, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"][field] == message
    assert not CreditEntry.objects.exists()


def test_ledger_api_lists_the_brands_entries_with_filters(tenancy, usage):
    client = brand_admin_api(tenancy)
    everything = client.get(reverse("api:credit-entries")).json()
    assert everything["count"] == 4  # one grant, three debits: never Beta's
    debits = client.get(reverse("api:credit-entries"), {"kind": "debit"}).json()
    assert {row["country"] for row in debits["results"]} == {"US", "GB"}
    one = client.get(reverse("api:credit-entries"), {"distribution": usage["second"].pk}).json()
    assert one["count"] == 1 and one["results"][0]["amount"] == "-1.0000"
    assert client.get(reverse("api:credit-entries"), {"kind": "bogus"}).status_code == 400


def test_distribution_api_shows_credits_consumed(tenancy, usage, api_a):
    answer = api_a.get(reverse("api:distribution-detail", args=[usage["first"].pk]))
    assert answer.status_code == 200
    assert Decimal(str(answer.json()["metrics"]["credits"])) == Decimal("3.5")


# --- pages --------------------------------------------------------------------------------------
def test_usage_page_shows_consumption_remaining_chart_and_tables(tenancy, usage, page_client_for):
    page = page_client_for(tenancy.admin_a).get(reverse("credits:usage"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="credits-remaining">95.5<' in html
    assert 'id="credits-consumed">4.5<' in html
    assert 'id="usage-chart"' in html and "vendor/chart.umd.min.js" in html
    assert "United Kingdom" in html and "Alpha pulse" in html
    assert 4.5 in page.context["chart"]["credits"]
    assert "Beta pulse" not in html and "France" not in html
    assert ">Credits</a>" in html  # the nav section, for brand admins


@pytest.mark.parametrize("role", [Role.VIEWER, Role.PROJECT_ADMIN])
def test_usage_pages_are_for_brand_admins_only(tenancy, usage, page_client_for, role):
    client = page_client_for(tenancy.user_for(role))
    assert client.get(reverse("credits:usage")).status_code == 403
    assert client.get(reverse("credits:usage-csv")).status_code == 403
    assert client.get(reverse("credits:ledger")).status_code == 403
    assert client.post(reverse("credits:usage"), {"amount": "50"}).status_code == 403
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("95.5")
    assert ">Credits</a>" not in client.get(reverse("projects:list")).content.decode()


def test_usage_csv_is_formula_safe(tenancy, usage, page_client_for):
    answer = page_client_for(tenancy.admin_a).get(reverse("credits:usage-csv"))
    assert answer.status_code == 200
    assert answer["Content-Disposition"].startswith('attachment; filename="licence-usage-alpha-')
    text = b"".join(answer.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Date", "Project", "Country", "Messages", "Segments", "Credits"]
    projects = {row[1] for row in rows[1:]}
    assert projects == {"Alpha pulse", "'" + usage["other"].name}
    assert sum(Decimal(row[5]) for row in rows[1:]) == Decimal("4.5")


def test_grant_from_the_page_and_its_bad_input(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    bad = client.post(reverse("credits:usage"), {"amount": "-20", "kind": "purchase"})
    assert bad.status_code == 400
    assert "Credits to add must be a positive number." in bad.content.decode()
    assert not CreditEntry.objects.exists()
    junk = client.post(reverse("credits:usage"), {"amount": "lots", "kind": "purchase"})
    assert "is not a number" in junk.content.decode() and not CreditEntry.objects.exists()
    ok = client.post(reverse("credits:usage"), {"amount": "20", "kind": "grant", "note": "Trial"})
    assert ok.status_code == 302
    entry = CreditEntry.objects.get()
    assert entry.kind == K.GRANT and entry.actor == tenancy.admin_a and entry.note == "Trial"


def test_period_picker_bad_dates_say_why(tenancy, usage, page_client_for):
    page = page_client_for(tenancy.admin_a).get(reverse("credits:usage"), {"start": "31/01"})
    assert page.status_code == 400
    assert "is not a date (YYYY-MM-DD)" in page.content.decode()


def test_ledger_page_lists_movements(tenancy, usage, page_client_for):
    client = page_client_for(tenancy.admin_a)
    page = client.get(reverse("credits:ledger"))
    assert page.status_code == 200 and page.context["page"].paginator.count == 1  # the grant
    debits = client.get(reverse("credits:ledger"), {"kind": "debit"})
    assert debits.context["page"].paginator.count == 3


def test_schedule_page_shows_real_credits_and_warns_before_overspending(tenancy, page_client_for):
    """The distribution pages' summary, fed by the real estimate (no mock)."""
    from tests.factories.credits import CountryRateFactory
    from tests.factories.participants import ParticipantFactory, PersonFactory

    CountryRateFactory(country="US", rate=Decimal("2"))
    for index in range(3):
        person = PersonFactory(brand=tenancy.brand_a, phone=f"+1415555{8100 + index:04d}")
        ParticipantFactory(project=tenancy.project_a, person=person)
    grant(tenancy.brand_a, 5)  # 4 recipients (with the tenancy's participant) x 2 credits = 8
    client = page_client_for(tenancy.admin_a)
    data = {
        "kind": "invite",
        "message": "Hi ${first_name}, tell us: ${link}",
        "audience": "all",
        "when": "now",
        "c_criterion": [""],
        "c_field": [""],
        "c_operator": ["is"],
        "c_value": [""],
    }
    summary = client.post(reverse("distributions:preview_count", args=[tenancy.project_a.pk]), data)
    content = summary.content.decode()
    assert 'id="credits-available">5<' in content
    assert 'id="credits-estimate">8 <span class="unit">credits' in content
    assert "The estimated cost exceeds your available credits." in content
    grant(tenancy.brand_a, 10)
    summary = client.post(reverse("distributions:preview_count", args=[tenancy.project_a.pk]), data)
    assert "exceeds your available credits" not in summary.content.decode()
