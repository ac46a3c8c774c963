"""Send policies in the recipient's time (distributions/policies.py): the time arithmetic at
fixed clocks (daylight-saving gaps and overlaps, zones east and west, windows across
midnight), a property test against a minute-by-minute oracle, whose time zone a recipient
has, and materialisation holding rows back in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import timezone as phone_timezone

from distributions.models import Message, MessageEvent
from distributions.policies import (
    LocalRule,
    next_allowed,
    phone_time_zones,
    plan_for,
    recipient_time_zones,
    rule_errors,
)
from distributions.services import distribution_materialise
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory

NIGHT = LocalRule(quiet=(time(21), time(8)))
NY, PARIS, TOKYO, LONDON = "America/New_York", "Europe/Paris", "Asia/Tokyo", "Europe/London"


def at(text: str, zone: str = "UTC") -> datetime:
    """A wall-clock time in ``zone`` (fold 0), as an aware datetime in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- fixed clocks ---------------------------------------------------------------------------


def test_allowed_now_is_now():
    now = at("2026-06-10 12:00", NY)
    assert next_allowed(NIGHT, [NY], now) == now


def test_quiet_hours_hold_until_local_morning_west_and_east():
    now = at("2026-06-10 03:00")  # 23:00 in New York, 12:00 in Tokyo, 05:00 in Paris
    assert next_allowed(NIGHT, [NY], now) == at("2026-06-10 08:00", NY)
    assert next_allowed(NIGHT, [TOKYO], now) == now
    assert next_allowed(NIGHT, [PARIS], now) == at("2026-06-10 08:00", PARIS)


def test_spring_forward_gap_start_is_the_first_instant_after_the_jump():
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT; allowed from 02:30.
    rule = LocalRule(quiet=(time(21), time(2, 30)))
    now = at("2026-03-08 01:00", NY)
    assert next_allowed(rule, [NY], now) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_fall_back_overlap_takes_the_first_occurrence():
    # New York, 1 November 2026: 02:00 EDT goes back to 01:00 EST; allowed from 01:30.
    rule = LocalRule(quiet=(time(21), time(1, 30)))
    now = at("2026-11-01 00:00", NY)
    assert next_allowed(rule, [NY], now) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # EDT


def test_fall_back_repeated_hour_reenters_quiet_hours_by_the_clock():
    # Quiet from 01:30: at 01:45 EDT it is quiet; the clock goes back to 01:00 EST, which is
    # before 01:30 again: allowed from that very instant until 01:30 EST.
    rule = LocalRule(quiet=(time(1, 30), time(8)))
    now = datetime(2026, 11, 1, 5, 45, tzinfo=UTC)  # 01:45 EDT
    assert next_allowed(rule, [NY], now) == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def test_quiet_hours_across_midnight_in_the_dst_night_of_europe():
    # Paris, 29 March 2026: 02:00 CET jumps to 03:00 CEST.
    now = at("2026-03-29 01:30", PARIS)
    assert next_allowed(NIGHT, [PARIS], now) == at("2026-03-29 08:00", PARIS)
    assert at("2026-03-29 08:00", PARIS) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_window_across_midnight_belongs_to_its_start_day():
    # 22:00-02:00 on Fridays only (4): Saturday 01:00 is in Friday's window, Saturday 23:00
    # is not (Saturday is not a window day), so it waits for next Friday 22:00.
    rule = LocalRule(window=(time(22), time(2)), days=frozenset({4}))
    saturday_1am = at("2026-06-13 01:00", TOKYO)
    assert next_allowed(rule, [TOKYO], saturday_1am) == saturday_1am
    saturday_11pm = at("2026-06-13 23:00", TOKYO)
    assert next_allowed(rule, [TOKYO], saturday_11pm) == at("2026-06-19 22:00", TOKYO)


def test_window_combined_with_quiet_hours():
    # Weekdays 07:00-10:00 window and quiet hours until 08:00: from 08:00 on a weekday.
    rule = LocalRule(
        quiet=(time(21), time(8)), window=(time(7), time(10)), days=frozenset(range(5))
    )
    friday_noon = at("2026-06-12 12:00", LONDON)
    assert next_allowed(rule, [LONDON], friday_noon) == at("2026-06-15 08:00", LONDON)


def test_several_zones_keep_the_rule_in_all_of_them():
    # 03:00 UTC: Paris 05:00 (quiet until 08:00), London 04:00 (quiet until 08:00 = 07:00
    # UTC). Allowed in both once London's morning comes.
    now = at("2026-06-10 03:00")
    assert next_allowed(NIGHT, [PARIS, LONDON], now) == at("2026-06-10 08:00", LONDON)


def test_zones_with_no_common_time_give_none():
    rule = LocalRule(quiet=(time(12), time(11)))  # one hour a day
    now = at("2026-06-10 00:00")
    assert next_allowed(rule, [TOKYO, NY], now) is None


def test_plan_falls_back_to_the_first_zone_when_none_is_common():
    rule = LocalRule(quiet=(time(12), time(11)))
    now = at("2026-06-10 00:00")
    plan = plan_for(rule=rule, fallback_zone="UTC", person_zones=[], now=now)
    # +7 mobiles: Russia's and Kazakhstan's zones; the first one of the set decides.
    zones = phone_time_zones("+79161234567")
    assert len(zones) > 1
    expected = next_allowed(rule, zones[:1], now)
    assert plan.by_prefix["7"].due == expected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quiet": (time(8), time(8))}, "quiet_hours_end"),
        ({"window": (time(9), time(9))}, "window_end"),
        ({"window": (time(9), None)}, "window_end"),
        ({"days": [7]}, "window_days"),
        ({"days": ["monday"]}, "window_days"),
        ({"quiet": (time(20), time(10)), "window": (time(22), time(6))}, "window_start"),
    ],
)
def test_rule_errors_name_the_field(kwargs, field):
    assert field in rule_errors(**kwargs)


def test_good_rule_has_no_errors():
    assert rule_errors(quiet=(time(21), time(8)), window=(time(9), time(17)), days=[0, 1]) == {}


# --- property test against a plain oracle ---------------------------------------------------


def oracle(rule: LocalRule, zones: list[str], now: datetime) -> datetime | None:
    """Step minute by minute (from ``now``, then whole minutes) until every zone's wall clock
    is allowed: slow and obviously right."""

    def ok(moment: datetime) -> bool:
        for name in zones:
            wall = moment.astimezone(ZoneInfo(name)).replace(tzinfo=None)
            clock = wall.time()
            quiet = rule.quiet
            if quiet and (
                quiet[0] <= clock < quiet[1]
                if quiet[0] < quiet[1]
                else clock >= quiet[0] or clock < quiet[1]
            ):
                return False
            days = rule.days or set(range(7))
            if rule.window is None:
                if wall.weekday() not in days:
                    return False
                continue
            start, end = rule.window
            if start < end:
                if not (wall.weekday() in days and start <= clock < end):
                    return False
            elif not (
                (clock >= start and wall.weekday() in days)
                or (clock < end and (wall - timedelta(days=1)).weekday() in days)
            ):
                return False
        return True

    if ok(now):
        return now
    moment = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(9 * 24 * 60):
        if ok(moment):
            return moment
        moment += timedelta(minutes=1)
    return None


ZONES = [NY, PARIS, TOKYO, LONDON, "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]
quarter_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


@st.composite
def rules(draw):
    quiet = None
    if draw(st.booleans()):
        start, end = draw(quarter_hours), draw(quarter_hours)
        quiet = (start, end) if start != end else None
    window = None
    if draw(st.booleans()):
        start, end = draw(quarter_hours), draw(quarter_hours)
        window = (start, end) if start != end else None
    days = frozenset(draw(st.sets(st.integers(0, 6), max_size=6)))
    return LocalRule(quiet=quiet, window=window, days=days)


@given(
    rule=rules(),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True),
    # Around the 2026 transitions of these zones (March/April and October/November).
    now=st.one_of(
        st.datetimes(datetime(2026, 3, 25), datetime(2026, 4, 6)),
        st.datetimes(datetime(2026, 10, 22), datetime(2026, 11, 3)),
    ).map(lambda naive: naive.replace(tzinfo=UTC)),
)
def test_next_allowed_matches_a_minute_by_minute_oracle(rule, zones, now):
    assert next_allowed(rule, zones, now) == oracle(rule, zones, now)


# --- whose time zone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["+14155550100", "+12125550100", "+33612345678", "+5511987654321", "+61412345678"],
)
def test_phone_zones_match_phonenumbers_for_valid_numbers(number):
    assert phone_time_zones(number) == phone_timezone.time_zones_for_number(
        phonenumbers.parse(number)
    )


def test_geographic_numbers_outside_nanpa_keep_every_zone_of_their_country():
    """A Sydney landline is Sydney to phonenumbers, but a mobile number of the same country is
    any Australian zone; the prefix alone cannot tell them apart, so both get every zone of
    the country: a superset, which keeps the rule in the recipient's zone whichever it is."""
    landline = phonenumbers.parse("+61291234567")
    assert phone_timezone.time_zones_for_number(landline) == ("Australia/Sydney",)
    assert set(phone_time_zones("+61291234567")) >= {"Australia/Sydney", "Australia/Perth"}


def test_recipient_zone_precedence():
    def zones(person="", phone=""):
        return recipient_time_zones(
            person_zone=person, phone=phone, project_zone="Europe/Berlin", brand_zone="UTC"
        )

    assert zones(person=TOKYO, phone="+12125550100") == (TOKYO,)
    assert zones(phone="+12125550100") == (NY,)
    assert zones() == ("Europe/Berlin",)
    assert recipient_time_zones(person_zone="", phone="", project_zone="", brand_zone="UTC") == (
        "UTC",
    )


# --- materialisation ------------------------------------------------------------------------


@pytest.fixture
def quiet_now(tenancy):
    """Brand A's SMS quiet hours cover now in UTC (an hour either side) and nowhere 8 hours
    or more away; the distribution's project has participants in UTC, Tokyo and New York."""
    now = timezone.now().astimezone(UTC)
    brand = tenancy.brand_a
    brand.time_zone = "UTC"
    brand.quiet_hours_sms = True
    brand.quiet_hours_start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    brand.quiet_hours_end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    brand.save()
    project = tenancy.project_a
    people = {}
    for name, zone, phone in [
        ("utc", "UTC", "+447911123456"),  # a London mobile, but the person's zone wins
        ("tokyo", "", "+81312345678"),  # from the phone number
        ("ny", NY, "+12125550123"),
    ]:
        people[name] = ParticipantFactory(
            project=project, person__phone=phone, person__time_zone=zone
        )
    return now, people


@pytest.mark.django_db
def test_materialise_holds_only_the_rows_in_quiet_hours(tenancy, quiet_now):
    now, people = quiet_now
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    rows = {m.participant_id: m for m in Message.objects.filter(distribution=distribution)}
    held = rows[people["utc"].pk]
    end = tenancy.brand_a.quiet_hours_end
    expected = datetime.combine(now.date(), end, tzinfo=UTC)
    if expected < now:
        expected += timedelta(days=1)
    assert held.status == Message.Status.PENDING
    assert held.due_at == expected
    assert f"planned for {expected:%Y-%m-%d %H:%M} UTC" in held.status_reason
    assert not MessageEvent.objects.filter(message=held).exists()  # Pending, like the rest
    for name in ("tokyo", "ny"):
        row = rows[people[name].pk]
        assert row.due_at <= timezone.now()
        assert row.status_reason == ""
        assert not MessageEvent.objects.filter(message=row).exists()


@pytest.mark.django_db
def test_materialise_without_policies_sets_nothing(tenancy):
    participant = ParticipantFactory(project=tenancy.project_a)
    distribution = DistributionFactory(project=tenancy.project_a)
    distribution_materialise(distribution=distribution)
    row = Message.objects.get(distribution=distribution, participant=participant)
    assert row.due_at <= timezone.now()
    assert row.status_reason == ""


@pytest.mark.django_db
def test_materialise_with_policies_runs_a_fixed_number_of_queries(tenancy, quiet_now):
    """The plan costs one query (the brand's person zones), whatever the number of rows."""
    for _ in range(20):
        ParticipantFactory(project=tenancy.project_a)
    distribution = DistributionFactory(project=tenancy.project_a)
    with CaptureQueriesContext(connection) as few:
        distribution_materialise(distribution=distribution)
    more = DistributionFactory(project=tenancy.project_a)
    for _ in range(40):
        ParticipantFactory(project=tenancy.project_a)
    with CaptureQueriesContext(connection) as many:
        distribution_materialise(distribution=more)
    assert len(many) == len(few)


# --- settings through the API and pages -----------------------------------------------------


@pytest.mark.django_db
def test_brand_policies_api_reads_and_changes_with_errors_by_field(tenancy, api_client_for):
    from tests.factories.brands import ApiKeyFactory

    admin = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role="brand_admin"))
    viewer = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role="viewer"))
    url = "/api/v1/brand/policies/"
    assert viewer.get(url).json()["quiet_hours_sms"] is False
    assert viewer.put(url, {"quiet_hours_sms": True}, format="json").status_code == 403
    bad_zone = admin.put(url, {"time_zone": "Mars/Olympus"}, format="json")
    assert bad_zone.status_code == 400 and "time_zone" in bad_zone.json()["error"]["fields"]
    empty = admin.put(
        url, {"quiet_hours_start": "08:00", "quiet_hours_end": "08:00"}, format="json"
    )
    assert empty.status_code == 400 and "quiet_hours_end" in empty.json()["error"]["fields"]
    changed = admin.put(
        url,
        {"quiet_hours_sms": True, "quiet_hours_start": "20:30", "time_zone": "Europe/Paris"},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    tenancy.brand_a.refresh_from_db()
    assert tenancy.brand_a.quiet_hours_sms and tenancy.brand_a.time_zone == "Europe/Paris"
    assert tenancy.brand_a.quiet_hours_start == time(20, 30)
    tenancy.brand_b.refresh_from_db()
    assert not tenancy.brand_b.quiet_hours_sms


@pytest.mark.django_db
def test_project_and_person_time_zones_are_validated(tenancy, api_a):
    project_url = f"/api/v1/projects/{tenancy.project_a.pk}/"
    bad = api_a.patch(project_url, {"time_zone": "Nowhere/City"}, format="json")
    assert bad.status_code == 400 and "time_zone" in bad.json()["error"]["fields"]
    good = api_a.patch(
        project_url,
        {"time_zone": "Asia/Tokyo", "quiet_hours_override": True, "quiet_hours_email": True},
        format="json",
    )
    assert good.status_code == 200, good.json()
    assert good.json()["time_zone"] == "Asia/Tokyo"
    person = api_a.post(
        "/api/v1/people/", {"email": "tz@example.com", "time_zone": "Mars/Olympus"}, format="json"
    )
    assert person.status_code == 400 and "time_zone" in person.json()["error"]["fields"]
    person = api_a.post(
        "/api/v1/people/", {"email": "tz@example.com", "time_zone": "Asia/Tokyo"}, format="json"
    )
    assert person.status_code == 201 and person.json()["time_zone"] == "Asia/Tokyo"


@pytest.mark.django_db
def test_distribution_window_is_checked_by_the_spec(tenancy, api_a):
    tenancy.project_a.stage = "active"
    tenancy.project_a.save()
    body = {"project": tenancy.project_a.pk, "message": "Hi", "window_start": "09:00"}
    answer = api_a.post("/api/v1/distributions/", body, format="json")
    assert answer.status_code == 400 and "window_end" in answer.json()["error"]["fields"]
    body |= {"window_end": "17:00", "window_days": [0, 1, 2, 3, 4], "send_at": None}
    answer = api_a.post("/api/v1/distributions/", body | {"accept_partial": True}, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["window_start"] == "09:00:00"
    assert answer.json()["window_days"] == [0, 1, 2, 3, 4]


@pytest.mark.django_db
def test_estimate_says_who_is_held_and_until_when(tenancy, api_a, quiet_now):
    now, people = quiet_now
    tenancy.project_a.stage = "active"
    tenancy.project_a.save()
    body = {"project": tenancy.project_a.pk, "message": "Hi ${first_name}"}
    answer = api_a.post("/api/v1/distributions/estimate/", body, format="json").json()
    assert answer["held"] == 1
    (group,) = answer["held_until"]
    assert group["recipients"] == 1 and "UTC" in group["label"]


@pytest.mark.django_db
def test_brand_settings_page_saves_quiet_hours(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    page = client.get("/brands/settings/")
    assert b"Time zone and quiet hours" in page.content
    answer = client.post(
        "/brands/settings/",
        {
            "action": "send_policies",
            "time_zone": "America/Chicago",
            "quiet_hours_start": "22:00",
            "quiet_hours_end": "07:30",
            "quiet_hours_sms": "on",
        },
    )
    assert answer.status_code == 302
    tenancy.brand_a.refresh_from_db()
    assert tenancy.brand_a.quiet_hours_sms and tenancy.brand_a.quiet_hours_end == time(7, 30)
    client.post(
        "/brands/settings/",
        {
            "action": "send_policies",
            "time_zone": "Bad/Zone",
            "quiet_hours_start": "22:00",
            "quiet_hours_end": "07:30",
        },
    )
    tenancy.brand_a.refresh_from_db()
    assert tenancy.brand_a.time_zone == "America/Chicago"


@pytest.mark.django_db
def test_schedule_page_shows_held_recipients_and_saves_a_send_window(
    tenancy, page_client_for, quiet_now
):
    from django.urls import reverse

    from distributions.models import Distribution

    project = tenancy.project_a
    project.stage = "active"
    project.save()
    client = page_client_for(tenancy.admin_a)
    create = reverse("distributions:create", args=[project.pk])
    page = client.get(create).content.decode()
    assert 'id="quiet-hours-held"' in page and "1 recipient is in quiet hours now" in page
    assert 'name="window_start"' in page
    form = {
        "kind": "invite",
        "name": "Windowed",
        "message": "Hi ${first_name}",
        "audience": "all",
        "when": "now",
        "c_criterion": [""],
        "c_field": [""],
        "c_operator": ["is"],
        "c_value": [""],
    }
    bad = client.post(create, form | {"window_start": "09:00", "window_end": "09:00"})
    assert bad.status_code == 400 and "The send window ends when it starts" in bad.content.decode()
    answer = client.post(
        create, form | {"window_start": "09:00", "window_end": "17:00", "window_days": ["0", "4"]}
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    distribution = Distribution.objects.get(name="Windowed")
    assert (distribution.window_start, distribution.window_end) == (time(9), time(17))
    assert distribution.window_days == [0, 4]
