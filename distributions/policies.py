"""Send policies in the recipient's own time: quiet hours and send windows (docs/policies.md).

A recipient's time zones: the person's ``time_zone``, else the zones of their phone number
(the longest prefix of ``phonenumbers``' time-zone data; a number with several zones keeps the
rule in all of them), else the project's zone, else the brand's.

A row due while its recipient's rule forbids sending is not dropped: materialisation gives it
``Message.due_at`` = the first instant the rule allows in every one of its zones, and the fair
engine hands it over then (a lane is ready at its next due row). The instant is computed once
per distinct zone (a few hundred at most) in Python, then applied to every row in the
``INSERT … SELECT`` by joining small ``VALUES`` tables on the person's zone and on the phone's
prefixes: no query and no Python per row.

Time arithmetic is exact under daylight-saving changes: the rule is a predicate on the local
wall-clock time (``LocalRule.allows``); it can only become true where the wall clock reaches
one of the rule's boundary times (either occurrence in a repeated hour) or jumps (a zone's
offset changes), so the first allowed instant is the first of those candidates where the
predicate holds (``next_allowed``; ``tests/test_policies.py`` checks it against a
minute-by-minute oracle).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    F,
    Value,
    When,
)

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, phonenumberutil
from phonenumbers.tzdata import TIMEZONE_DATA

from brands.models import Brand, time_zone_names
from brands.roles import Role, role_allows
from distributions.conditions import conditions_clean, conditions_q
from distributions.models import Distribution, FrequencyRule, Message
from participants.models import Person
from participants.selectors import metadata_spellings
from projects.models import Project, SurveyLink

# A window on one day a week comes round within 8 days; a day's margin either side.
HORIZON_DAYS = 9
# How often a zone's offset is sampled to find its transitions (none are closer than this).
OFFSET_SAMPLE = timedelta(hours=6)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
LABEL_MAX = 300


def _within(moment: time, start: time, end: time) -> bool:
    """``moment`` in [start, end) of a day; an end before the start crosses midnight."""
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


@dataclass(frozen=True)
class LocalRule:
    """When a recipient may receive, in their local wall-clock time: outside the quiet hours
    and inside the send window (hours, on ``days``: 0 = Monday; empty: every day). A window
    that crosses midnight belongs to the day it starts on."""

    quiet: tuple[time, time] | None = None
    window: tuple[time, time] | None = None
    days: frozenset[int] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.quiet or self.window or self.days)

    def allows(self, wall: datetime) -> bool:
        moment = wall.time()
        if self.quiet is not None and _within(moment, *self.quiet):
            return False
        days = self.days or frozenset(range(7))
        if self.window is None:
            return wall.weekday() in days
        start, end = self.window
        if start < end:
            return wall.weekday() in days and start <= moment < end
        if moment >= start:
            return wall.weekday() in days
        return moment < end and (wall.weekday() - 1) % 7 in days

    def boundaries(self) -> set[time]:
        """The wall-clock times where ``allows`` may change."""
        found = {time(0)}
        for pair in (self.quiet, self.window):
            if pair is not None:
                found.update(pair)
        return found


def rule_errors(
    *,
    quiet: tuple[time, time] | None = None,
    window: tuple[time | None, time | None] | None = None,
    days: Iterable | None = None,
    prefix: str = "",
) -> dict[str, str]:
    """Every way a rule is unusable, by field (``prefix`` + ``window_start`` …): an empty
    quiet period or window, unknown days, or a window entirely inside the quiet hours."""
    errors: dict[str, str] = {}
    if quiet is not None and quiet[0] == quiet[1]:
        errors[f"{prefix}quiet_hours_end"] = "The quiet hours end when they start: they are empty."
    start, end = window or (None, None)
    if (start is None) != (end is None):
        missing = "window_end" if end is None else "window_start"
        errors[f"{prefix}{missing}"] = "A send window needs both a start and an end time."
    elif start is not None and start == end:
        errors[f"{prefix}window_end"] = "The send window ends when it starts: it is empty."
    day_list = list(days or [])
    if any(
        not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 6 for day in day_list
    ):
        errors[f"{prefix}window_days"] = "Days are numbers from 0 (Monday) to 6 (Sunday)."
    if errors:
        return errors
    rule = LocalRule(
        quiet=quiet,
        window=(start, end) if start is not None else None,
        days=frozenset(day_list),
    )
    # On a wall clock without daylight saving, the rule must allow some minute of the week.
    monday = datetime(2024, 1, 1)  # noqa: DTZ001 - a wall-clock time, no zone on purpose
    if rule and not any(
        rule.allows(monday + timedelta(minutes=minute)) for minute in range(0, 7 * 24 * 60, 5)
    ):
        errors[f"{prefix}window_start"] = (
            "The send window lies entirely inside the quiet hours: nothing could be sent."
        )
    return errors


# --- time arithmetic ------------------------------------------------------------------------


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in [start, end] where ``zone``'s UTC offset changes (to the second)."""
    found = []
    at = start
    offset = at.astimezone(zone).utcoffset()
    while at < end:
        step = min(at + OFFSET_SAMPLE, end)
        next_offset = step.astimezone(zone).utcoffset()
        if next_offset != offset:
            # offset(low) is the old offset, offset(high) the new one: halve to the second.
            low, high = math.floor(at.timestamp()), math.ceil(step.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(datetime.fromtimestamp(high, UTC))
            offset = next_offset
        at = step
    return found


def _candidates(rule: LocalRule, zone: ZoneInfo, now: datetime) -> set[datetime]:
    """Instants after ``now`` where ``rule`` may become true in ``zone``: each boundary's
    occurrences (both, in a repeated hour; a skipped one maps near its gap) and the zone's
    offset changes."""
    end = now + timedelta(days=HORIZON_DAYS)
    first_day: date = _wall(now, zone).date() - timedelta(days=1)
    found = set(_transitions(zone, now, end))
    for offset in range(HORIZON_DAYS + 2):
        day = first_day + timedelta(days=offset)
        for boundary in rule.boundaries():
            wall = datetime.combine(day, boundary)
            for fold in (0, 1):
                found.add(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC))
    return {moment for moment in found if now < moment <= end}


def next_allowed(rule: LocalRule, zones: Iterable[str], now: datetime) -> datetime | None:
    """The first instant at or after ``now`` that ``rule`` allows in every zone of ``zones``;
    None when there is none within ``HORIZON_DAYS`` (zones too far apart for the rule)."""
    zone_infos = [ZoneInfo(name) for name in zones]
    now = now.astimezone(UTC)

    def allowed(moment: datetime) -> bool:
        return all(rule.allows(_wall(moment, zone)) for zone in zone_infos)

    if not rule or allowed(now):
        return now
    candidates: set[datetime] = set()
    for zone in zone_infos:
        candidates |= _candidates(rule, zone, now)
    return next((moment for moment in sorted(candidates) if allowed(moment)), None)


# --- whose time zone ------------------------------------------------------------------------


# Country codes whose mobile numbers are tied to an area like landlines (phonenumbers reads
# their zone from the number's prefix, whatever its type): NANPA and phonenumbers' list.
GEOGRAPHIC_COUNTRY_CODES = frozenset({1, *getattr(phonenumberutil, "_GEO_MOBILE_COUNTRIES", ())})


# A phone's key keeps at least this many digits: every country code (they are at most
# three digits, and none is the start of another).
SHORT_KEY_DIGITS = 3


def _country_code(digits: str) -> str | None:
    return next(
        (digits[:size] for size in (1, 2, 3) if int(digits[:size]) in COUNTRY_CODE_TO_REGION_CODE),
        None,
    )


@functools.cache
def _phone_prefixes() -> dict[str, tuple[str, ...]]:
    """Prefix (country code and national digits) → zones, from ``phonenumbers``' data.

    phonenumbers gives a mobile number of most countries every zone of its country, and a
    landline the zone of its area; a prefix cannot tell one from the other, so outside the
    countries whose mobiles are geographic only the country-level entry is kept (every zone
    of the country: the rule then holds in whichever the recipient is in).
    """
    known = time_zone_names()
    prefixes = {}
    for prefix, zones in TIMEZONE_DATA.items():
        code = _country_code(prefix)
        if code is None:
            continue
        if len(prefix) > len(code) and int(code) not in GEOGRAPHIC_COUNTRY_CODES:
            continue
        usable = tuple(zone for zone in zones if zone in known)
        if usable:
            prefixes[prefix] = usable
    return prefixes


@functools.cache
def _prefix_parents() -> dict[str, str | None]:
    """Each prefix's longest proper prefix that is itself in the data (None: none is)."""
    prefixes = _phone_prefixes()
    parents: dict[str, str | None] = {}
    for prefix in prefixes:
        parents[prefix] = next(
            (prefix[:size] for size in range(len(prefix) - 1, 0, -1) if prefix[:size] in prefixes),
            None,
        )
    return parents


def phone_time_zones(phone: str) -> tuple[str, ...]:
    """The time zones of an E.164 number: those of its longest prefix in ``phonenumbers``'
    data (empty when none matches)."""
    digits = phone.lstrip("+")
    prefixes = _phone_prefixes()
    for size in range(min(len(digits), 12), 0, -1):
        zones = prefixes.get(digits[:size])
        if zones:
            return zones
    return ()


def recipient_time_zones(
    *, person_zone: str, phone: str, project_zone: str, brand_zone: str
) -> tuple[str, ...]:
    """The zones whose local time a rule applies in, by the precedence of docs/policies.md."""
    if person_zone:
        return (person_zone,)
    return phone_time_zones(phone) or ((project_zone or brand_zone),)


# --- a distribution's rule and its plan -----------------------------------------------------


def quiet_hours_for(project: Project, channel: str) -> tuple[time, time] | None:
    """The quiet hours of ``channel`` (the project's when it overrides the brand's)."""
    source = project if project.quiet_hours_override else project.brand
    on = (
        source.quiet_hours_email
        if channel == Distribution.Channel.EMAIL
        else source.quiet_hours_sms
    )
    return (source.quiet_hours_start, source.quiet_hours_end) if on else None


def distribution_rule(distribution: Distribution) -> LocalRule:
    """The quiet hours of the distribution's channel combined with its send window."""
    quiet = quiet_hours_for(distribution.project, distribution.channel)
    window = None
    if distribution.window_start is not None and distribution.window_end is not None:
        window = (distribution.window_start, distribution.window_end)
    return LocalRule(quiet=quiet, window=window, days=frozenset(distribution.window_days or ()))


@dataclass(frozen=True)
class Hold:
    """Rows whose zones are held until ``due``, and the text their history shows."""

    due: datetime
    label: str


@dataclass
class DuePlan:
    """When each recipient of a distribution may receive, by zone and by phone prefix.

    ``by_zone``: a person's own zone → its hold (zones allowed now are absent);
    ``by_prefix``: phone prefix → its hold, or None for allowed now (only prefixes whose
    answer differs from their parent's); ``fallback``: the project's (or brand's) zone.
    """

    now: datetime
    by_zone: dict[str, Hold]
    by_prefix: dict[str, Hold | None]
    fallback: Hold | None

    @property
    def holds_any(self) -> bool:
        return bool(
            self.by_zone or self.fallback or any(h is not None for h in self.by_prefix.values())
        )


def _label(rule: LocalRule, zones: tuple[str, ...], due: datetime) -> str:
    why = "quiet hours" if rule.quiet and not rule.window and not rule.days else "send policy"
    if len(zones) == 1:
        local = due.astimezone(ZoneInfo(zones[0]))
        where = f"{local:%Y-%m-%d %H:%M} {zones[0]}"
    else:
        where = f"{due:%Y-%m-%d %H:%M} UTC, allowed in {', '.join(zones)}"
    return f"Waiting ({why}): planned for {where}"[:LABEL_MAX]


def plan_for(
    *, rule: LocalRule, fallback_zone: str, person_zones: Iterable[str], now: datetime
) -> DuePlan:
    """The holds of ``rule`` at ``now`` for every zone and prefix (computed once per distinct
    zone set: a few hundred)."""
    holds: dict[tuple[str, ...], Hold | None] = {}

    def hold(zones: tuple[str, ...]) -> Hold | None:
        if zones not in holds:
            due = next_allowed(rule, zones, now)
            if due is None and fallback_zone not in zones:
                # No instant the rule allows in all of them: keep it in the first one.
                due = next_allowed(rule, zones[:1], now)
            elif due is None:
                due = next_allowed(rule, (fallback_zone,), now)
            holds[zones] = (
                None if due is None or due <= now else Hold(due, _label(rule, zones, due))
            )
        return holds[zones]

    fallback = hold((fallback_zone,))
    by_zone = {zone: hold((zone,)) for zone in person_zones}
    by_zone = {zone: value for zone, value in by_zone.items() if value is not None}
    prefixes = _phone_prefixes()
    parents = _prefix_parents()
    by_prefix: dict[str, Hold | None] = {}
    for prefix, zones in prefixes.items():
        parent = parents[prefix]
        mine = hold(zones)
        theirs = hold(prefixes[parent]) if parent is not None else fallback
        if mine != theirs:
            by_prefix[prefix] = mine
    return DuePlan(now=now, by_zone=by_zone, by_prefix=by_prefix, fallback=fallback)


def distribution_plan(*, distribution: Distribution, now: datetime) -> DuePlan | None:
    """The plan of ``distribution`` at ``now``; None when no rule holds anyone back."""
    rule = distribution_rule(distribution)
    if not rule:
        return None
    project = distribution.project
    person_zones = (
        Person.objects.filter(brand_id=project.brand_id)
        .exclude(time_zone="")
        .order_by()
        .values_list("time_zone", flat=True)
        .distinct()
    )
    plan = plan_for(
        rule=rule,
        fallback_zone=project.time_zone or project.brand.time_zone,
        person_zones=list(person_zones),
        now=now,
    )
    return plan if plan.holds_any else None


# --- the plan in SQL ------------------------------------------------------------------------


@dataclass
class PlanSql:
    """Fragments that apply a plan to a selection ``sel`` with columns ``tz`` (the person's
    zone) and ``phone``: ``joins`` after its FROM, then ``due`` and ``label`` expressions.
    Parameters: ``join_params`` in the joins, ``due_params`` and ``label_params`` where those
    expressions appear."""

    joins: str
    join_params: list
    due: str
    due_params: list
    label: str
    label_params: list


def _t(value: datetime):
    """A time as raw SQL takes it (SQLite: Django's text form)."""
    return connection.ops.adapt_datetimefield_value(value)


def _key_digits(by_prefix: dict) -> dict[str, int]:
    """Country code → the length of the longest prefix of ``by_prefix`` in it (only the
    countries whose numbers are zoned by area have any longer than their code)."""
    found: dict[str, int] = {}
    for prefix in by_prefix:
        code = _country_code(prefix)
        if code is None or not code.isdigit():  # _phone_prefixes keeps known codes only
            raise ValueError(f"Phone prefix {prefix!r} has no country code.")
        found[code] = max(found.get(code, 0), len(prefix))
    return found


def plan_sql(plan: DuePlan, *, brand_id: int, alias: str = "sel") -> PlanSql:
    """The plan as SQL over ``alias`` (see ``PlanSql``): one LEFT JOIN, on a key per
    recipient (their own zone, else ``+`` and their phone's first digits), to the held keys
    with their due time and label.

    The held keys are resolved once per distinct key of the brand's directory (a person is
    in one brand's directory, so that covers every selected recipient; the statement's
    snapshot is the selection's): its own zone against a ``VALUES`` table of zones, its
    digits against one of prefixes per prefix length, the longest match winning. Resolving
    every row through those joins instead cost a hash join per prefix length (eight) over
    all the rows (docs/benchmarks.md).
    """
    holds = sorted(
        {
            hold
            for hold in [*plan.by_zone.values(), *plan.by_prefix.values(), plan.fallback]
            if hold
        },
        key=lambda hold: (hold.due, hold.label),
    )
    due, label = "COALESCE(ph.due, %s)", "COALESCE(ph.label, '')"
    if not holds:
        return PlanSql("", [], due, [_t(plan.now)], label, [])
    number = {hold: index for index, hold in enumerate(holds, start=1)}  # 0: allowed now
    lengths = sorted({len(prefix) for prefix in plan.by_prefix}, reverse=True)
    digits = _key_digits(plan.by_prefix)
    # The digits a phone's key keeps: a prefix of the data never reaches past them, and
    # phones that differ only after them have the same hold (few distinct keys).
    kept = " ".join(
        f"WHEN substr({{phone}}, 2, {len(code)}) = '{code}' THEN {count}"
        for code, count in sorted(digits.items())
        if count > SHORT_KEY_DIGITS
    )
    kept = f"CASE {kept} ELSE {SHORT_KEY_DIGITS} END" if kept else str(SHORT_KEY_DIGITS)

    def key(table: str) -> str:
        # Zone names never start with "+".
        phone = f"COALESCE({table}.phone, '')"
        return (
            f"CASE WHEN {table}.tz <> '' THEN {table}.tz "
            f"ELSE '+' || substr({phone}, 2, {kept.format(phone=phone)}) END"
        )

    joins: list[str] = []
    join_params: list = []

    def values(name: str, rows: list[tuple[str, Hold | None]], on: str) -> None:
        marks = ", ".join("(%s, %s)" for _ in rows)
        joins.append(f"LEFT JOIN (VALUES {marks}) {name} ON {name}.column1 = {on}")
        for row_key, hold in rows:
            join_params.extend([row_key, number.get(hold, 0)])

    if plan.by_zone:
        values("pz", sorted(plan.by_zone.items()), "k.key")
    for size in lengths:
        rows = sorted((k, v) for k, v in plan.by_prefix.items() if len(k) == size)
        values(f"pp{size}", rows, f"substr(k.key, 2, {size})")
    by_phone = ", ".join([*(f"pp{size}.column2" for size in lengths), "%s"])
    own = "COALESCE(pz.column2, 0)" if plan.by_zone else "0"
    which = f"CASE WHEN k.key LIKE '+%%' THEN COALESCE({by_phone}) ELSE {own} END"
    marks = ", ".join("(%s, %s, %s)" for _ in holds)
    hold_params = [value for hold in holds for value in (number[hold], _t(hold.due), hold.label)]
    people = Person._meta.db_table
    # Fragments of our own; every value is a bound parameter.
    sql = f"""LEFT JOIN (
        SELECT k.key, h.column2 AS due, h.column3 AS label
        FROM (
            SELECT DISTINCT {key("p")} AS key FROM (
                SELECT time_zone AS tz, phone FROM {people} WHERE brand_id = %s
            ) p
        ) k
        {" ".join(joins)}
        JOIN (VALUES {marks}) h ON h.column1 = {which}
    ) ph ON ph.key = {key(alias)}"""  # noqa: S608
    params = [brand_id, *join_params, *hold_params, number.get(plan.fallback, 0)]
    return PlanSql(sql, params, due, [_t(plan.now)], label, [])


def plan_preview(*, distribution: Distribution, queryset, now: datetime) -> dict:
    """Before scheduling: how many of the participants ``queryset`` selects a send policy
    holds back if it went now, and when they would receive it (one grouped query)."""
    plan = distribution_plan(distribution=distribution, now=now)
    if plan is None:
        return {"held": 0, "held_until": []}
    selected = queryset.order_by().values(tz=F("person__time_zone"), phone=F("person__phone"))
    inner_sql, inner_params = selected.query.sql_with_params()
    held = plan_sql(plan, brand_id=distribution.project.brand_id)
    # Fragments from plan_sql and the ORM; every value is a bound parameter.
    sql = f"""
        SELECT due, label, COUNT(*) FROM (
            SELECT {held.due} AS due, {held.label} AS label FROM ({inner_sql}) sel {held.joins}
        ) planned WHERE label <> '' GROUP BY due, label ORDER BY due, label
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [*held.due_params, *held.label_params, *inner_params, *held.join_params]
        )
        rows = cursor.fetchall()
    groups = [
        {"due": _as_aware(due), "label": label, "recipients": count} for due, label, count in rows
    ]
    return {"held": sum(group["recipients"] for group in groups), "held_until": groups}


def _as_aware(value) -> datetime:
    """A time read back from raw SQL (SQLite gives text in UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- contact frequency rules ----------------------------------------------------------------

# pg_advisory_xact_lock(class, brand): materialisations of one brand under rules take turns.
FREQUENCY_LOCK_CLASS = 1903
# Rows that were, or are about to be, a contact.
CONTACT_STATUSES = (*Message.HANDED_OVER, *Message.OPEN_STATUSES)


def frequency_rules_for(distribution: Distribution) -> list[FrequencyRule]:
    """The active rules that apply to ``distribution``: the project's own rules if it has
    any, else the brand's; only those that count its kind and its channel. None when a brand
    admin marked it to ignore the rules."""
    if distribution.ignore_frequency_rules:
        return []
    project = distribution.project
    rules = list(FrequencyRule.objects.filter(brand_id=project.brand_id, active=True))
    chosen = [rule for rule in rules if rule.project_id == project.pk] or [
        rule for rule in rules if rule.project_id is None
    ]
    return [
        rule
        for rule in chosen
        if distribution.kind in rule.counted_kinds() and rule.channel in ("", distribution.channel)
    ]


def frequency_annotate(queryset, *, distribution: Distribution, rules):
    """``queryset`` (participants) with ``fm<i>``: whether the participant matches rule i's
    conditions (True for a rule without any), for ``frequency_sql``."""
    spellings = metadata_spellings(project_id=distribution.project_id)
    return queryset.annotate(
        **{
            f"fm{index}": Case(
                When(conditions_q(rule.conditions, spellings=spellings), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            )
            if rule.conditions
            else Value(True, output_field=BooleanField())
            for index, rule in enumerate(rules)
        }
    )


@dataclass
class FrequencySql:
    """``SELECT sel0.*, {rule} AS freq_rule FROM (selection) sel0 {joins}``: the pk of the
    first rule each row is over (NULL: none). ``rule_params`` then ``join_params``."""

    rule: str
    rule_params: list
    joins: str
    join_params: list

    def wrap(self, inner_sql: str, inner_params) -> tuple[str, list]:
        sql = f"SELECT sel0.*, {self.rule} AS freq_rule FROM ({inner_sql}) sel0 {self.joins}"  # noqa: S608 - fragments are ours
        return sql, [*self.rule_params, *inner_params, *self.join_params]


def frequency_sql(*, distribution: Distribution, rules, now: datetime) -> FrequencySql:
    """One grouped pass over the contacts of the brand's people that may count (in a
    rule's period or gap, or still open), with, per rule, how many are in its period and
    whether one is closer than its gap (conditional aggregates), hash-joined to the
    selection: linear whatever the table statistics say (a correlated count per row was
    planned as a scan per row right after a bulk insert; one subquery per rule scanned the
    contacts once per rule; docs/benchmarks.md)."""
    messages, distributions = Message._meta.db_table, Distribution._meta.db_table
    projects = Project._meta.db_table
    open_marks = ", ".join(["%s"] * len(Message.OPEN_STATUSES))
    contact_marks = ", ".join(["%s"] * len(CONTACT_STATUSES))
    counted, counted_params, whens, rule_params, thresholds = [], [], [], [], []
    totals: list[str] = []
    all_kinds: list[str] = []
    flags, flag_params = [], []
    for index, rule in enumerate(rules):
        kinds = rule.counted_kinds()
        all_kinds += [kind for kind in kinds if kind not in all_kinds]
        # The distributions whose rows rule ``index`` counts: its kinds, its channel (if it
        # names one); a flag per distribution, so that the contacts carry no text to group.
        match = f"d.kind IN ({', '.join(['%s'] * len(kinds))})"
        match_params = list(kinds)
        if rule.channel:
            match += " AND d.channel = %s"
            match_params.append(rule.channel)
        flags.append(f"{match} AS k{index}")
        flag_params += match_params
        recent = f"dk.k{index} AND (m.sent_at >= %s OR m.status IN ({open_marks}))"
        over = []
        if rule.max_messages is not None:
            since = now - timedelta(days=rule.period_days)
            counted.append(f"CASE WHEN {recent} THEN 1 ELSE 0 END AS n{index}")
            totals.append(f"SUM(c.n{index}) AS n{index}")
            counted_params += [_t(since), *Message.OPEN_STATUSES]
            thresholds.append(since)
            over.append(f"COALESCE(fr.n{index}, 0) >= %s")
            rule_params.append(rule.max_messages)
        if rule.min_gap_hours:
            gap_since = now - timedelta(hours=rule.min_gap_hours)
            counted.append(f"CASE WHEN {recent} THEN 1 ELSE 0 END AS c{index}")
            totals.append(f"MAX(c.c{index}) AS c{index}")
            counted_params += [_t(gap_since), *Message.OPEN_STATUSES]
            thresholds.append(gap_since)
            over.append(f"COALESCE(fr.c{index}, 0) = 1")
        whens.append(f"WHEN sel0.fm{index} AND ({' OR '.join(over) or '1 = 0'}) THEN %s")
        rule_params.append(rule.pk)
    rule_sql = f"CASE {' '.join(whens)} END"
    if not counted:  # no rule limits anything (frequency_rule_save does not allow it)
        return FrequencySql(rule_sql, rule_params, "", [])
    # The contacts of the brand's distributions: a person is in one brand's directory, and
    # only its projects' participants (participant_create checks it), so these are all the
    # contacts of the selected people; the join keeps the selection's. (Restricting to the
    # project's people first, ``person_id IN (...)``, was planned as one index probe per
    # contact on the statistics right after a bulk insert: 1.7 s per rule for 380,000
    # contacts, docs/benchmarks.md; hashed, it still cost more than grouping them.) A contact
    # older than every period and gap, and no longer open, counts for no rule: left out
    # before grouping.
    # ``OFFSET 0`` keeps each subquery a scan of its own on PostgreSQL (not pulled up into
    # the grouping): the rows grouped are a person and a few small numbers, not the
    # distribution's kind and channel and the message's status (SQLite takes no OFFSET
    # without a LIMIT, and has nothing to sort).
    fence = "OFFSET 0" if connection.vendor == "postgresql" else ""
    joins = f"""LEFT JOIN (
        SELECT c.person_id, {", ".join(totals)} FROM (
            SELECT m.person_id, {", ".join(counted)}
            FROM {messages} m JOIN (
                SELECT d.id, {", ".join(flags)} FROM {distributions} d
                WHERE d.project_id IN (SELECT id FROM {projects} WHERE brand_id = %s)
                  AND d.id <> %s AND d.kind IN ({", ".join(["%s"] * len(all_kinds))})
                {fence}
            ) dk ON dk.id = m.distribution_id
            WHERE m.status IN ({contact_marks})
              AND (m.sent_at >= %s OR m.status IN ({open_marks}))
            {fence}
        ) c
        GROUP BY c.person_id
    ) fr ON fr.person_id = sel0.person_ref"""  # noqa: S608 - names are ours
    join_params = [
        *counted_params,
        *flag_params,
        distribution.project.brand_id,
        distribution.pk or 0,
        *all_kinds,
        *CONTACT_STATUSES,
        _t(min(thresholds)),
        *Message.OPEN_STATUSES,
    ]
    return FrequencySql(rule_sql, rule_params, joins, join_params)


def frequency_skipped_count(*, distribution: Distribution, queryset, rules, now) -> int:
    """How many participants of ``queryset`` a rule would skip now (one query)."""
    if not rules:
        return 0
    selected = frequency_annotate(
        queryset.order_by(), distribution=distribution, rules=rules
    ).values(*(f"fm{index}" for index in range(len(rules))), person_ref=F("person_id"))
    inner_sql, inner_params = selected.query.sql_with_params()
    sql, params = frequency_sql(distribution=distribution, rules=rules, now=now).wrap(
        inner_sql, inner_params
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) x WHERE x.freq_rule IS NOT NULL", params)  # noqa: S608 - fragments are ours
        return cursor.fetchone()[0]


def frequency_reasons(rules) -> list[tuple[int, str]]:
    """(rule pk, the status reason that names it) for every rule."""
    return [(rule.pk, f"Frequency rule: {rule.name}"[:LABEL_MAX]) for rule in rules]


def frequency_lock(*, brand_id: int) -> None:
    """Inside the materialisation's transaction: one materialisation under rules at a time
    per brand, so that the second counts the first's rows (committed by then) and two
    distributions starting together never both pass a person beyond a limit. SQLite admits
    one writer at a time already."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [FREQUENCY_LOCK_CLASS, brand_id])


# --- frequency rules: writes ----------------------------------------------------------------

RULE_FIELDS = (
    "project",
    "name",
    "channel",
    "max_messages",
    "period_days",
    "min_gap_hours",
    "conditions",
    "count_reminders",
    "count_thank_you",
    "count_transactional",
    "active",
)


def frequency_rule_save(
    *, brand: Brand, actor=None, role: str, rule: FrequencyRule | None = None, **changes
) -> FrequencyRule:
    """Create (``rule`` None) or change a rule of ``brand``; ValidationError by field.

    Brand admins manage every rule; project admins only a project's own rules. A rule limits
    something (a number per period or a gap); conditions are checked like a distribution's;
    a brand has at most ``FrequencyRule.MAX_PER_BRAND`` rules.
    """
    unknown = set(changes) - set(RULE_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))
    rule = rule or FrequencyRule(brand=brand, created_by=actor)
    was_project = rule.project_id
    for name, value in changes.items():
        setattr(rule, name, value)
    errors: dict[str, str] = {}
    if rule.project is not None and rule.project.brand_id != brand.pk:
        errors["project"] = "No such project."
    # A project admin may not make, change or move a brand rule.
    brand_rule = rule.project is None or (rule.pk is not None and was_project is None)
    if brand_rule and not role_allows(role, Role.BRAND_ADMIN):
        errors["project"] = "Only brand admins manage brand rules: choose a project."
    if not (rule.name or "").strip():
        errors["name"] = "Give the rule a name."
    if rule.max_messages is not None and not 1 <= rule.max_messages <= rule.MAX_MESSAGES:
        errors["max_messages"] = (
            f"At least 1 and at most {rule.MAX_MESSAGES} (or empty for no limit on the number)."
        )
    if rule.period_days is None or not 1 <= rule.period_days <= rule.MAX_PERIOD_DAYS:
        errors["period_days"] = f"The period is at least 1 day and at most {rule.MAX_PERIOD_DAYS}."
    if rule.min_gap_hours is None or not 0 <= rule.min_gap_hours <= rule.MAX_GAP_HOURS:
        errors["min_gap_hours"] = f"The gap is 0 hours or more, at most {rule.MAX_GAP_HOURS}."
    if rule.max_messages is None and not rule.min_gap_hours and not errors:
        errors["max_messages"] = "Give a number per period, a minimum gap, or both."
    if rule.channel not in ("", *Distribution.Channel.values):
        errors["channel"] = f"Unknown channel '{rule.channel}'."
    try:
        rule.conditions = conditions_clean(rule.conditions or [])
    except ValidationError as exc:
        errors["conditions"] = " ".join(exc.messages)
    if rule.pk is None and (
        FrequencyRule.objects.filter(brand=brand).count() >= FrequencyRule.MAX_PER_BRAND
    ):
        errors["name"] = f"A brand has at most {FrequencyRule.MAX_PER_BRAND} rules."
    if errors:
        raise ValidationError(errors)
    rule.name = rule.name.strip()
    rule.save()
    return rule


def frequency_rule_delete(*, rule: FrequencyRule, role: str) -> None:
    if rule.project_id is None and not role_allows(role, Role.BRAND_ADMIN):
        raise ValidationError({"project": "Only brand admins manage brand rules."})
    rule.delete()


# --- expiring links -------------------------------------------------------------------------


def link_expires_at(distribution: Distribution, *, now: datetime) -> datetime | None:
    """When the personal links a distribution makes expire: its own number of days, else its
    project's, after it started (None: never)."""
    days = distribution.link_expiry_days or distribution.project.link_expiry_days
    if not days:
        return None
    return (distribution.started_at or now) + timedelta(days=days)


def shared_invite_links(*, distribution: Distribution, participant_ids) -> dict:
    """A reminder of an invite shares the invite's personal links: participant → link (one
    query; empty for anything else)."""
    if distribution.kind != Distribution.Kind.REMINDER or not distribution.parent_id:
        return {}
    links = SurveyLink.objects.filter(
        distribution_id=distribution.parent_id, participant_id__in=list(participant_ids)
    ).order_by("pk")
    return {link.participant_id: link for link in links}
