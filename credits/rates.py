"""The rate card as the engine reads it, recipients' countries, and the rate card CSV loader.

Prices are credits per SMS segment by the recipient's country (ISO 3166 alpha-2, derived from
the E.164 number with ``phonenumbers``). A country without a rate of its own costs the default
rate; a disabled country is not sent to.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.db import transaction

import phonenumbers

from credits.countries import COUNTRY_NAMES
from credits.models import AMOUNT_PLACES, RATE_DIGITS, ZERO, CountryRate, RateCard

QUANTUM = Decimal(1).scaleb(-AMOUNT_PLACES)  # 0.0001
MAX_RATE = Decimal(10) ** (RATE_DIGITS - AMOUNT_PLACES) - QUANTUM
UNKNOWN_COUNTRY = ""


def quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_UP)


# --- countries -------------------------------------------------------------------------------
@lru_cache(maxsize=65536)
def phone_country(e164: str) -> str:
    """ISO country of an E.164 number ("" when unknown or not a country, like +800).

    A calling code of one country decides alone (as in ``phonenumbers``, which only looks
    further for codes shared by several countries, like +1 or +44); cached per number.
    """
    if not e164 or not e164.startswith("+") or not e164[1:].isdigit():
        return UNKNOWN_COUNTRY
    for length in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(e164[1 : 1 + length]))
        if regions:
            break
    else:
        return UNKNOWN_COUNTRY
    national = e164[1 + length :]
    if len(regions) == 1:
        region = regions[0]
    elif length == 1 and e164[1] == "1" and len(national) == 10 and national[0] not in "01":
        # A North American number in E.164 form: ``parse`` would find exactly this number
        # (the plan's national prefix "1" cannot lead it), at three times the cost.
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(national))
        region = phonenumbers.region_code_for_number(number)
    else:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
        except phonenumbers.NumberParseException:
            return UNKNOWN_COUNTRY
    return region if region and len(region) == 2 and region != "ZZ" else UNKNOWN_COUNTRY


def country_name(code: str) -> str:
    """English name of an ISO country ("France"), or the code itself."""
    if not code:
        return "Unknown"
    return COUNTRY_NAMES.get(code, code)


# --- the rate table --------------------------------------------------------------------------
@dataclass(frozen=True)
class RateTable:
    """The rate card at one moment: ``rate(country)`` and ``enabled(country)``."""

    default: Decimal
    rates: dict[str, Decimal] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    inbound_default: Decimal = Decimal(0)
    inbound_rates: dict[str, Decimal] = field(default_factory=dict)

    def rate(self, country: str) -> Decimal:
        return self.rates.get(country, self.default)

    def inbound_rate(self, country: str) -> Decimal:
        """Credits for one message received from ``country`` (a two-way reply)."""
        return self.inbound_rates.get(country, self.inbound_default)

    def enabled(self, country: str) -> bool:
        return country not in self.disabled

    def snapshot(self, countries) -> dict[str, str]:
        """The rates of ``countries`` (and the default) as JSON-safe strings."""
        frozen = {country: str(self.rate(country)) for country in countries}
        frozen["*"] = str(self.default)
        return frozen

    def with_snapshot(self, frozen: dict | None) -> RateTable:
        """This table with the prices frozen in ``frozen`` (disabled countries stay live)."""
        if not frozen:
            return self
        rates = dict(self.rates)
        default = self.default
        for country, value in frozen.items():
            if country == "*":
                default = Decimal(value)
            else:
                rates[country] = Decimal(value)
        # A country the snapshot does not name keeps its live rate, not the frozen default.
        for country in self.rates:
            rates.setdefault(country, self.rates[country])
        return dataclasses.replace(self, default=default, rates=rates)


def rate_table() -> RateTable:
    """The current rate card (two small queries)."""
    card = RateCard.current()
    rates = {}
    inbound = {}
    disabled = set()
    for country, rate, inbound_rate, enabled in CountryRate.objects.values_list(
        "country", "rate", "inbound_rate", "enabled"
    ):
        rates[country] = rate
        if inbound_rate is not None:
            inbound[country] = inbound_rate
        if not enabled:
            disabled.add(country)
    return RateTable(
        default=card.default_rate,
        rates=rates,
        disabled=frozenset(disabled),
        inbound_default=card.default_inbound_rate,
        inbound_rates=inbound,
    )


def disabled_reason(country: str) -> str:
    return f"Not sent: SMS to {country_name(country)} ({country}) is disabled on this platform."


# --- the CSV loader --------------------------------------------------------------------------
COUNTRY_COLUMNS = ("country", "country code", "iso", "region")
RATE_COLUMNS = ("credits_per_segment", "credits per segment", "rate", "credits")
ENABLED_COLUMNS = ("enabled", "active")
NOTE_COLUMNS = ("note", "notes", "comment")
DEFAULT_COUNTRY_WORDS = ("*", "default")
TRUE_WORDS = ("1", "yes", "y", "true", "enabled", "on")
FALSE_WORDS = ("0", "no", "n", "false", "disabled", "off")
MAX_CSV_BYTES = 1_000_000  # a full rate card is ~250 lines: anything bigger is a mistake


@dataclass
class RateCardRow:
    line: int
    country: str  # "" for the default rate
    rate: Decimal
    enabled: bool
    note: str = ""


@dataclass
class RateCardLoad:
    rows: list[RateCardRow]
    default_rate: Decimal | None
    created: int = 0
    updated: int = 0
    deleted: int = 0


def parse_rate(raw: str) -> Decimal:
    """A rate as Decimal: a number >= 0 with at most 4 decimals. Raises ValueError."""
    text = (raw or "").strip()
    if not text:
        raise ValueError("the rate is empty")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"'{text}' is not a number") from exc
    if not value.is_finite():
        raise ValueError(f"'{text}' is not a finite number")
    if value < 0:
        raise ValueError(f"'{text}' is negative")
    if value != quantize(value):
        raise ValueError(f"'{text}' has more than {AMOUNT_PLACES} decimal places")
    if value > MAX_RATE:
        raise ValueError(f"'{text}' is larger than {MAX_RATE.normalize()}")
    return value


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def rate_card_parse(text: str) -> RateCardLoad:
    """Validate a whole rate card CSV; raise ValidationError listing every bad line.

    Columns (header required, names ignore case): ``country`` (ISO 3166 alpha-2, or
    ``default``/``*`` for the default rate), ``credits_per_segment`` (or ``rate``), and
    optionally ``enabled`` (yes/no, true/false, 1/0; empty means yes) and ``note``.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_CSV_BYTES:
        raise ValidationError(f"The file is larger than {MAX_CSV_BYTES // 1000} kB.")
    text = text.lstrip("\ufeff")
    try:
        dialect = csv.Sniffer().sniff(text[:2048], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader, None)
    if not header:
        raise ValidationError("The file is empty: expected a header 'country,credits_per_segment'.")
    country_at = _column(header, COUNTRY_COLUMNS)
    rate_at = _column(header, RATE_COLUMNS)
    enabled_at = _column(header, ENABLED_COLUMNS)
    note_at = _column(header, NOTE_COLUMNS)
    if country_at is None or rate_at is None:
        raise ValidationError(
            "The header must name a 'country' column and a 'credits_per_segment' (or 'rate') "
            f"column; found: {', '.join(h.strip() for h in header) or 'nothing'}."
        )
    errors: list[str] = []
    rows: list[RateCardRow] = []
    default_rate: Decimal | None = None
    seen: dict[str, int] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue

        def cell(index: int | None, cells=cells) -> str:
            return cells[index].strip() if index is not None and index < len(cells) else ""

        problems = []
        country = cell(country_at).upper()
        is_default = country.lower() in DEFAULT_COUNTRY_WORDS
        if not country:
            problems.append("the country is empty")
        elif not is_default and country not in phonenumbers.SUPPORTED_REGIONS:
            problems.append(f"'{cell(country_at)}' is not a known ISO 3166 country code")
        try:
            rate = parse_rate(cell(rate_at))
        except ValueError as exc:
            problems.append(str(exc))
            rate = ZERO
        enabled_text = cell(enabled_at).lower()
        if enabled_text in ("", *TRUE_WORDS):
            enabled = True
        elif enabled_text in FALSE_WORDS:
            enabled = False
        else:
            problems.append(f"enabled must be yes or no, not '{cell(enabled_at)}'")
            enabled = True
        key = "*" if is_default else country
        if key and key in seen:
            what = "the default rate" if is_default else country
            problems.append(f"{what} is already on line {seen[key]}")
        if is_default and not enabled:
            problems.append("the default rate cannot be disabled")
        if problems:
            errors.append(f"Line {line}: " + "; ".join(problems) + ".")
            continue
        seen[key] = line
        if is_default:
            default_rate = rate
        else:
            rows.append(RateCardRow(line, country, rate, enabled, cell(note_at)[:200]))
    if errors:
        raise ValidationError(errors)
    if not rows and default_rate is None:
        raise ValidationError("The file has a header but no rates.")
    return RateCardLoad(rows=rows, default_rate=default_rate)


def rate_card_load(*, text: str, replace: bool = False, dry_run: bool = False) -> RateCardLoad:
    """Validate the whole CSV first, then write it in one transaction (nothing on any error).

    ``replace``: countries absent from the file lose their own rate (they cost the default).
    ``dry_run``: validate and count, write nothing.
    """
    load = rate_card_parse(text)
    existing = dict(CountryRate.objects.values_list("country", "pk"))
    load.created = sum(1 for row in load.rows if row.country not in existing)
    load.updated = len(load.rows) - load.created
    wanted = {row.country for row in load.rows}
    load.deleted = len(set(existing) - wanted) if replace else 0
    if dry_run:
        return load
    with transaction.atomic():
        if load.default_rate is not None:
            card = RateCard.current()
            card.default_rate = load.default_rate
            card.save()
        if replace:
            CountryRate.objects.exclude(country__in=wanted).delete()
        CountryRate.objects.bulk_create(
            [
                CountryRate(country=row.country, rate=row.rate, enabled=row.enabled, note=row.note)
                for row in load.rows
            ],
            update_conflicts=True,
            unique_fields=["country"],
            update_fields=["rate", "enabled", "note", "updated_at"],
        )
    return load


def rate_card_csv_rows():
    """The current rate card as CSV rows (header first), loadable by ``rate_card_load``."""
    yield ["country", "credits_per_segment", "enabled", "note"]
    yield ["default", str(RateCard.current().default_rate), "yes", "Countries without a rate"]
    for rate in CountryRate.objects.order_by("country"):
        yield [rate.country, str(rate.rate), "yes" if rate.enabled else "no", rate.note]
