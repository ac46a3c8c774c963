"""What a distribution will cost: recipients by country times the segments of their text.

Two uses:

* before scheduling (``credits_estimate``), over the participants the conditions select;
* when a distribution starts (its reservation), over its Pending recipient rows.

The database does the heavy part in one grouped query: recipients are grouped by the first
``PREFIX_LENGTH`` characters of their E.164 number (which decide the country, see below) and
by the values of the piped fields the text uses (``${first_name}``...). Python then renders the
text once per group (not once per recipient), counts its segments once per distinct rendered
text, and resolves the country once per prefix. A text without personal fields is one group
per prefix, so 100,000 recipients cost one query and a few hundred Python steps.

Links are rendered at their real length: a personal link is ``PUBLIC_BASE_URL/s/`` plus a
10-character token, an opt-out link ``PUBLIC_BASE_URL/o/`` plus a 16-character token whatever
the message id (``optouts.links``), so the estimate made before the rows exist is exact.

Countries: ``phonenumbers`` assigns a number to a country by its calling code and, for codes
shared by several countries (+1, +7, +44, ...), by its first national digits (NANP area code,
Guernsey/Jersey/Isle of Man mobile ranges, Kazakh ranges), all within the first 7 characters.
The estimate resolves one sample number per ``PREFIX_LENGTH``-character prefix; debits resolve
every number exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import CharField, Count, F, Min, QuerySet, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Substr

from core.tokens import TOKEN_LENGTH
from credits.models import ZERO
from credits.rates import RateTable, phone_country, quantize
from credits.segments import count_segments
from optouts.links import opt_out_url
from participants.rendering import PERSON_FIELDS, PIPED, piped_fields

PREFIX_LENGTH = 8  # "+" and 7 digits: calling code and the digits that split shared codes
SAMPLE_MESSAGE_ID = 1_000_000  # the opt-out link of a message not created yet (any id: 16 chars)
LINK_FIELDS = ("link", "opt_out_link")
Spellings = Callable[[str], list[str]]


def link_placeholder() -> str:
    """A personal link's exact length (the token alphabet is GSM-7 basic, like the URL's)."""
    return f"{settings.PUBLIC_BASE_URL}/s/" + "0" * TOKEN_LENGTH


def opt_out_placeholder(message_id: int = SAMPLE_MESSAGE_ID) -> str:

    return opt_out_url(message_id)


@dataclass
class CountryCost:
    country: str
    recipients: int = 0
    segments: int = 0
    credits: Decimal = ZERO
    rate: Decimal = ZERO
    enabled: bool = True

    def as_dict(self) -> dict:
        return {
            "country": self.country,
            "recipients": self.recipients,
            "segments": self.segments,
            "credits": self.credits,
            "rate": self.rate,
            "enabled": self.enabled,
        }


@dataclass
class Estimate:
    recipients: int = 0  # sendable recipients (disabled countries excluded)
    segments: int = 0
    credits: Decimal = ZERO
    skipped: int = 0  # recipients in disabled countries
    by_country: dict[str, CountryCost] = field(default_factory=dict)
    max_segments: int = 0

    @property
    def countries(self) -> list[str]:
        return sorted(self.by_country)


def _metadata_value(
    name: str, *, spellings: Spellings | None, participant_prefix: str, person_prefix: str
):
    """The value a metadata field renders: the project value wins over the directory value.

    ``render`` matches names by ``participants.metadata.normalise_key``; SQL cannot, so the
    caller gives the spellings stored for the name (``participants.selectors
    .metadata_spellings``), tried in the participant's then the person's data.
    """
    names = (spellings(name) if spellings else None) or [name]
    sources = [f"{participant_prefix}metadata", f"{person_prefix}metadata"]
    candidates = [KeyTextTransform(spelling, source) for source in sources for spelling in names]
    return Coalesce(*candidates, Value(""), output_field=CharField())


def estimate_groups(
    queryset: QuerySet,
    *,
    template: str,
    phone_path: str,
    person_prefix: str,
    participant_prefix: str,
    spellings: Spellings | None = None,
) -> tuple[list[str], list[dict]]:
    """One grouped query: ``[{"prefix", "sample", "n", "f0", ...}]`` and the field names."""
    names = [name for name in dict.fromkeys(piped_fields(template)) if name not in LINK_FIELDS]
    annotations = {"cc_prefix": Substr(phone_path, 1, PREFIX_LENGTH)}
    aliases = []
    for index, name in enumerate(names):
        alias = f"f{index}"
        aliases.append(alias)
        if name in PERSON_FIELDS:
            expression = Coalesce(F(f"{person_prefix}{name}"), Value(""))
        elif name == "role":
            expression = Coalesce(F(f"{participant_prefix}role"), Value(""))
        else:
            expression = _metadata_value(
                name,
                spellings=spellings,
                participant_prefix=participant_prefix,
                person_prefix=person_prefix,
            )
        annotations[alias] = expression
    rows = (
        queryset.order_by()
        .annotate(**annotations)
        .values("cc_prefix", *aliases)
        .annotate(n=Count("pk"), sample=Min(phone_path))
        .values_list("cc_prefix", "sample", "n", *aliases)
    )
    return names, list(rows)


def text_builder(template: str, names: list[str], fixed: dict[str, str]):
    """``build(values) -> str``: the text ``render`` gives for one group's field values
    (in ``names`` order; links are ``fixed``). The template is split once, so building a
    text is one ``str.join`` instead of a regular-expression pass."""
    plan: list[tuple[int | None, str]] = []
    for position, piece in enumerate(PIPED.split(template or "")):
        if position % 2 == 0:
            plan.append((None, piece))
        elif piece in fixed:
            plan.append((None, fixed[piece]))
        else:
            plan.append((names.index(piece), ""))
    merged: list[tuple[int | None, str]] = []
    for index, constant in plan:
        if index is None and merged and merged[-1][0] is None:
            merged[-1] = (None, merged[-1][1] + constant)
        else:
            merged.append((index, constant))

    def build(values) -> str:
        return "".join(constant if index is None else values[index] for index, constant in merged)

    return build


def _duplicates_by_prefix(queryset: QuerySet, phone_path: str) -> dict[str, int]:
    """Rows beyond the first of each phone number, by prefix (a number has one prefix)."""
    rows = (
        queryset.order_by()
        .annotate(cc_prefix=Substr(phone_path, 1, PREFIX_LENGTH))
        .values("cc_prefix")
        .annotate(n=Count("pk"), numbers=Count(phone_path, distinct=True))
        .values_list("cc_prefix", "n", "numbers")
    )
    return {prefix or "": n - numbers for prefix, n, numbers in rows if n > numbers}


def estimate_cost(
    queryset: QuerySet,
    *,
    template: str,
    rates: RateTable,
    phone_path: str,
    person_prefix: str,
    participant_prefix: str,
    opt_out_link: str | None = None,
    one_per_number: bool = False,
    spellings: Spellings | None = None,
) -> Estimate:
    """Cost of sending ``template`` to every row of ``queryset`` that has a phone number.

    ``one_per_number``: rows sharing a number count once (as materialisation keeps one). The
    extra rows are taken off their prefix at its average segments per recipient: exact in
    recipients, and in segments unless duplicates of one number have texts of other lengths.
    ``spellings(name)``: the stored spellings of a metadata field (see ``_metadata_value``).
    """
    queryset = queryset.exclude(**{phone_path: ""}).exclude(**{f"{phone_path}__isnull": True})
    names, groups = estimate_groups(
        queryset,
        template=template,
        phone_path=phone_path,
        person_prefix=person_prefix,
        participant_prefix=participant_prefix,
        spellings=spellings,
    )
    fixed = {
        "link": link_placeholder(),
        "opt_out_link": opt_out_link if opt_out_link is not None else opt_out_placeholder(),
    }
    build = text_builder(template, names, fixed)
    samples: dict[str, str] = {}
    segments_of: dict[str, int] = {}
    per_prefix: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # recipients, segments
    max_segments = 0
    for prefix, sample, count, *values in groups:
        prefix = prefix or ""
        samples.setdefault(prefix, sample or "")
        text = build([v if isinstance(v, str) else ("" if v is None else str(v)) for v in values])
        segments = segments_of.get(text)
        if segments is None:
            segments = segments_of[text] = count_segments(text)
        max_segments = max(max_segments, segments)
        bucket = per_prefix[prefix]
        bucket[0] += count
        bucket[1] += count * segments
    if one_per_number and per_prefix:
        for prefix, extra in _duplicates_by_prefix(queryset, phone_path).items():
            recipients, segments = per_prefix[prefix]
            per_prefix[prefix] = [
                recipients - extra,
                segments - round(extra * segments / recipients) if recipients else 0,
            ]
    per_country: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for prefix, (recipients, segments) in per_prefix.items():
        bucket = per_country[phone_country(samples.get(prefix, ""))]
        bucket[0] += recipients
        bucket[1] += segments
    estimate = Estimate(max_segments=max_segments)
    for country, (recipients, segments) in sorted(per_country.items()):
        enabled = rates.enabled(country)
        rate = rates.rate(country)
        cost = CountryCost(
            country=country,
            recipients=recipients,
            segments=segments,
            credits=quantize(rate * segments) if enabled else ZERO,
            rate=rate,
            enabled=enabled,
        )
        estimate.by_country[country] = cost
        if enabled:
            estimate.recipients += recipients
            estimate.segments += segments
            estimate.credits += cost.credits
        else:
            estimate.skipped += recipients
    return estimate
