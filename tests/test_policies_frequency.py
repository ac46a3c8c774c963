"""Contact frequency rules (docs/policies.md): decided in SQL at materialisation, naming the
rule; reminders exempt unless a rule counts them; project rules instead of the brand's;
conditions; a brand admin's "ignore"; exact when two distributions start together."""

from __future__ import annotations

import threading
from datetime import timedelta

from django.db import connection
from django.utils import timezone

import pytest

from distributions.models import Distribution, FrequencyRule, Message
from distributions.services import distribution_materialise
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory

S = Message.Status


def sent_before(participant, *, kind="invite", days_ago=1, channel="sms"):
    """A message handed over ``days_ago`` days ago to the participant's person."""
    earlier = DistributionFactory(project=participant.project, kind=kind, channel=channel)
    at = timezone.now() - timedelta(days=days_ago)
    return Message.objects.create(
        distribution=earlier,
        participant=participant,
        person=participant.person,
        address=participant.person.phone,
        status=S.DELIVERED,
        status_changed_at=at,
        sent_at=at,
    )


def rows(distribution) -> dict:
    return {
        m.participant_id: (m.status, m.status_reason)
        for m in Message.objects.filter(distribution=distribution)
    }


@pytest.fixture
def people(tenancy):
    return [ParticipantFactory(project=tenancy.project_a) for _ in range(3)]


@pytest.mark.django_db
def test_over_the_limit_is_skipped_naming_the_rule(tenancy, people):
    FrequencyRule.objects.create(
        brand=tenancy.brand_a, name="Once a week", max_messages=1, period_days=7
    )
    sent_before(people[0], days_ago=2)  # inside the week: over
    sent_before(people[1], days_ago=8)  # outside: fine
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    got = rows(distribution)
    assert got[people[0].pk] == (S.SKIPPED_FREQUENCY, "Frequency rule: Once a week")
    assert got[people[1].pk][0] == S.PENDING
    assert got[people[2].pk][0] == S.PENDING


@pytest.mark.django_db
def test_min_gap_and_channel(tenancy, people):
    FrequencyRule.objects.create(brand=tenancy.brand_a, name="Gap", min_gap_hours=48, channel="sms")
    sent_before(people[0], days_ago=1)
    sent_before(people[1], days_ago=1, channel="email")  # another channel: not counted
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    got = rows(distribution)
    assert got[people[0].pk][0] == S.SKIPPED_FREQUENCY
    assert got[people[1].pk][0] == S.PENDING


@pytest.mark.django_db
def test_reminders_are_exempt_unless_the_rule_counts_them(tenancy, people):
    rule = FrequencyRule.objects.create(
        brand=tenancy.brand_a, name="Weekly", max_messages=1, period_days=7
    )
    sent_before(people[0], days_ago=1)
    reminder = DistributionFactory(project=tenancy.project_a, kind="reminder")
    distribution_materialise(distribution=reminder)
    assert rows(reminder)[people[0].pk][0] == S.PENDING
    # Earlier reminders are not counted either.
    sent_before(people[1], kind="reminder", days_ago=1)
    invite = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=invite)
    assert rows(invite)[people[1].pk][0] == S.PENDING
    assert rows(invite)[people[0].pk][0] == S.SKIPPED_FREQUENCY
    rule.count_reminders = True
    rule.save()
    second = DistributionFactory(project=tenancy.project_a, kind="reminder")
    distribution_materialise(distribution=second)
    assert rows(second)[people[0].pk][0] == S.SKIPPED_FREQUENCY


@pytest.mark.django_db
def test_project_rules_replace_the_brands_and_conditions_narrow_a_rule(tenancy, people):
    FrequencyRule.objects.create(
        brand=tenancy.brand_a, name="Brand weekly", max_messages=1, period_days=7
    )
    for participant in people:
        sent_before(participant, days_ago=1)
    people[0].role = "Manager"
    people[0].save()
    FrequencyRule.objects.create(
        brand=tenancy.brand_a,
        project=tenancy.project_a,
        name="Managers weekly",
        max_messages=1,
        period_days=7,
        conditions=[{"criterion": "role", "operator": "is", "value": "Manager"}],
    )
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    got = rows(distribution)
    assert got[people[0].pk] == (S.SKIPPED_FREQUENCY, "Frequency rule: Managers weekly")
    assert got[people[1].pk][0] == S.PENDING  # the brand's rule does not apply here


@pytest.mark.django_db
def test_a_distribution_marked_to_ignore_the_rules_sends(tenancy, people):
    FrequencyRule.objects.create(
        brand=tenancy.brand_a, name="Weekly", max_messages=1, period_days=7
    )
    sent_before(people[0], days_ago=1)
    distribution = DistributionFactory(project=tenancy.project_a, ignore_frequency_rules=True)
    distribution_materialise(distribution=distribution)
    assert rows(distribution)[people[0].pk][0] == S.PENDING


@pytest.mark.django_db
def test_rules_of_another_brand_do_not_apply(tenancy, people):
    FrequencyRule.objects.create(brand=tenancy.brand_b, name="B", max_messages=1, period_days=7)
    sent_before(people[0], days_ago=1)
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    assert rows(distribution)[people[0].pk][0] == S.PENDING


@pytest.mark.django_db(transaction=True)
def test_two_distributions_racing_contact_each_person_once(tenancy):
    """1 per 7 days, two invites materialised at the same moment in two connections: every
    person ends with exactly one Pending row between them."""
    if connection.vendor != "postgresql":
        pytest.skip("row-level concurrency needs PostgreSQL")
    project = tenancy.project_a
    participants = [ParticipantFactory(project=project) for _ in range(40)]
    FrequencyRule.objects.create(brand=tenancy.brand_a, name="Weekly", max_messages=1)
    first, second = (DistributionFactory(project=project) for _ in range(2))
    start = threading.Barrier(2)
    errors = []

    def run(distribution):
        try:
            start.wait()
            distribution_materialise(distribution=Distribution.objects.get(pk=distribution.pk))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(d,)) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    pending = Message.objects.filter(
        distribution__in=[first, second], status=S.PENDING
    ).values_list("participant_id", flat=True)
    wanted = [p.pk for p in participants] + [tenancy.participant_a.pk]
    assert sorted(pending) == sorted(wanted)
    assert Message.objects.filter(
        distribution__in=[first, second], status=S.SKIPPED_FREQUENCY
    ).count() == len(wanted)


# --- API and pages --------------------------------------------------------------------------


@pytest.mark.django_db
def test_rules_api_validates_by_field_and_keeps_brand_rules_to_brand_admins(
    tenancy, api_client_for
):
    from tests.factories.brands import ApiKeyFactory

    admin = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role="brand_admin"))
    project_admin = api_client_for(
        api_key=ApiKeyFactory(brand=tenancy.brand_a, role="project_admin")
    )
    url = "/api/v1/frequency-rules/"
    negative = admin.post(url, {"name": "Bad", "max_messages": -1}, format="json")
    assert negative.status_code == 400 and "max_messages" in negative.json()["error"]["fields"]
    nothing = admin.post(url, {"name": "Nothing"}, format="json")
    assert nothing.status_code == 400 and "max_messages" in nothing.json()["error"]["fields"]
    # Numbers past the bounds are refused naming the field (they overflowed the column: 500).
    for field, value in (
        ("max_messages", 9223372036854775806),
        ("period_days", 2**40),
        ("min_gap_hours", 2**40),
    ):
        huge = admin.post(url, {"name": "Huge", "max_messages": 1, field: value}, format="json")
        assert huge.status_code == 400 and field in huge.json()["error"]["fields"], field
    refused = project_admin.post(url, {"name": "Brand", "max_messages": 1}, format="json")
    assert refused.status_code == 400 and "project" in refused.json()["error"]["fields"]
    other = project_admin.post(
        url,
        {"name": "Theirs", "max_messages": 1, "project": tenancy.project_b.pk},
        format="json",
    )
    assert other.status_code == 404
    own = project_admin.post(
        url,
        {
            "name": "Managers",
            "max_messages": 2,
            "period_days": 30,
            "project": tenancy.project_a.pk,
            "conditions": [{"criterion": "role", "operator": "is", "value": "Manager"}],
        },
        format="json",
    )
    assert own.status_code == 201, own.json()
    brand_rule = admin.post(
        url, {"name": "Weekly", "max_messages": 1, "channel": "sms"}, format="json"
    )
    assert brand_rule.status_code == 201
    assert project_admin.delete(f"{url}{brand_rule.json()['id']}/").status_code == 400
    listed = admin.get(url).json()
    names = sorted(rule["name"] for rule in listed["results"])
    assert names == ["Managers", "Weekly"]
    FrequencyRule.objects.create(brand=tenancy.brand_b, name="B", max_messages=1)
    assert all(rule["name"] != "B" for rule in listed["results"])


@pytest.mark.django_db
def test_only_brand_admins_ignore_rules_and_it_is_recorded(tenancy, api_client_for):
    from tests.factories.brands import ApiKeyFactory

    tenancy.project_a.stage = "active"
    tenancy.project_a.save()
    body = {
        "project": tenancy.project_a.pk,
        "message": "Hi",
        "ignore_frequency_rules": True,
        "accept_partial": True,
        "send_at": (timezone.now() + timedelta(days=1)).isoformat(),
    }
    project_admin = api_client_for(
        api_key=ApiKeyFactory(brand=tenancy.brand_a, role="project_admin")
    )
    assert project_admin.post("/api/v1/distributions/", body, format="json").status_code == 403
    admin = api_client_for(user=tenancy.admin_a)
    answer = admin.post("/api/v1/distributions/", body, format="json")
    assert answer.status_code == 201, answer.json()
    distribution = Distribution.objects.get(pk=answer.json()["id"])
    assert distribution.ignore_frequency_rules
    assert distribution.frequency_rules_ignored_by == tenancy.admin_a
    assert distribution.frequency_rules_ignored_at is not None


@pytest.mark.django_db
def test_estimate_counts_who_a_rule_would_skip(tenancy, api_a, people):
    tenancy.project_a.stage = "active"
    tenancy.project_a.save()
    FrequencyRule.objects.create(brand=tenancy.brand_a, name="Weekly", max_messages=1)
    sent_before(people[0], days_ago=1)
    body = {"project": tenancy.project_a.pk, "message": "Hi"}
    answer = api_a.post("/api/v1/distributions/estimate/", body, format="json").json()
    assert answer["frequency_skipped"] == 1
    reminder = api_a.post(
        "/api/v1/distributions/estimate/", body | {"kind": "reminder"}, format="json"
    ).json()
    assert reminder["frequency_skipped"] == 0


@pytest.mark.django_db
def test_rules_page_adds_lists_and_deletes(tenancy, page_client_for):
    from django.urls import reverse

    client = page_client_for(tenancy.admin_a)
    url = reverse("distributions:frequency_rules")
    assert b"No rules" in client.get(url).content
    bad = client.post(
        url, {"name": "Bad", "max_messages": "-2", "period_days": "7", "min_gap_hours": "0"}
    )
    assert bad.status_code == 400 and b"At least 1" in bad.content
    huge = client.post(
        url, {"name": "Huge", "max_messages": str(2**63), "period_days": "7", "min_gap_hours": "0"}
    )
    assert huge.status_code == 400 and b"at most 100000" in huge.content
    assert not FrequencyRule.objects.filter(name="Huge").exists()
    answer = client.post(
        url,
        {
            "name": "Sales weekly",
            "max_messages": "1",
            "period_days": "7",
            "min_gap_hours": "24",
            "metadata_field": "Team",
            "metadata_value": "Sales",
        },
    )
    assert answer.status_code == 302
    rule = FrequencyRule.objects.get(brand=tenancy.brand_a)
    assert rule.conditions == [
        {"criterion": "metadata", "field": "Team", "operator": "is", "value": "Sales"}
    ]
    assert b"Sales weekly" in client.get(url).content
    client.post(url, {"action": "delete", "rule_id": rule.pk})
    assert not FrequencyRule.objects.filter(pk=rule.pk).exists()
    viewer = page_client_for(tenancy.viewer_a)
    assert viewer.get(url).status_code in (403, 404)
