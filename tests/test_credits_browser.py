"""The licence usage report in a real browser: the chart draws from real consumption, the
period picker and the grant form work, and the page raises no JavaScript error."""

from decimal import Decimal

import pytest

from brands.roles import Role
from credits.selectors import credits_balance
from distributions.models import Distribution
from distributions.services import distribution_create
from tests.browser import browser_user, login, screenshot
from tests.factories.credits import CountryRateFactory, grant
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_usage_report_draws_real_consumption_and_adds_credits(
    page,
    live_server,
    tenancy,
    eager_tasks,  # noqa: F811
):
    CountryRateFactory(country="US", rate=Decimal("1"))
    CountryRateFactory(country="GB", rate=Decimal("1.5"))
    for index, phone in enumerate(["+14155558201", "+14155558202", "+447400123999"]):
        person = PersonFactory(brand=tenancy.brand_a, first_name=f"P{index}", phone=phone)
        ParticipantFactory(project=tenancy.project_a, person=person)
    grant(tenancy.brand_a, 20)
    distribution = distribution_create(project=tenancy.project_a, message="Hi ${first_name}")
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT

    admin = browser_user(tenancy.brand_a, role=Role.BRAND_ADMIN)
    login(page, live_server, admin)
    page.goto(f"{live_server.url}/credits/")
    page.wait_for_function("() => window.Chart && Chart.getChart('usage-chart')")
    drawn = page.evaluate("() => Chart.getChart('usage-chart').data.datasets[0].data")
    consumed = Decimal(str(sum(drawn)))
    # The tenancy's participant (a US number) + 2 US + 1 GB, one segment each.
    assert consumed == Decimal("4.5")
    assert page.inner_text("#credits-consumed") == "4.5"
    assert page.inner_text("#credits-remaining") == "15.5"
    assert "United Kingdom" in page.inner_text("#usage-by-country")
    screenshot(page, "credits-usage-report")

    page.fill("input[name=amount]", "-3")
    with page.expect_navigation():
        page.click("button:has-text('Add credits')")
    assert "Credits to add must be a positive number." in page.inner_text("main")
    page.fill("input[name=amount]", "30")
    page.fill("input[name=note]", "Order 12")
    with page.expect_navigation():
        page.click("button:has-text('Add credits')")
    assert "30 credits added" in page.inner_text(".messages")
    assert credits_balance(brand=tenancy.brand_a).available == Decimal("45.5")
    assert page.js_errors == []
