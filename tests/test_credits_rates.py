"""The rate card (CSV loader, command, admin) and the cost estimate shown before scheduling."""

from decimal import Decimal
from io import StringIO

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brands.models import Brand
from credits.models import CountryRate, CreditEntry, RateCard
from credits.rates import phone_country, rate_card_load, rate_card_parse, rate_table
from credits.selectors import credits_available, credits_consumed
from distributions.charging import credits_estimate
from tests.factories.credits import CountryRateFactory, grant, set_default_rate
from tests.factories.distributions import DistributionFactory, OptOutFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db

GOOD = """country,credits_per_segment,enabled,note
default,1.5,,
US,1,yes,United States
gb,1.25,true,
FR,2,no,paused for now
"""


# --- the CSV loader -----------------------------------------------------------------------------
def test_a_good_rate_card_is_loaded_in_full():
    load = rate_card_load(text=GOOD)
    assert (load.created, load.updated, load.deleted) == (3, 0, 0)
    assert RateCard.current().default_rate == Decimal("1.5")
    table = rate_table()
    assert table.rate("US") == 1 and table.rate("GB") == Decimal("1.25")
    assert table.rate("DE") == Decimal("1.5")  # no rate of its own: the default
    assert not table.enabled("FR") and table.enabled("DE")
    assert CountryRate.objects.get(country="FR").note == "paused for now"


def test_loading_again_updates_and_replace_removes_the_rest():
    rate_card_load(text=GOOD)
    again = rate_card_load(text="country;rate\nUS;0.9\nDE;3\n", replace=True)
    assert (again.created, again.updated, again.deleted) == (1, 1, 2)
    assert dict(CountryRate.objects.values_list("country", "rate")) == {
        "US": Decimal("0.9"),
        "DE": Decimal("3"),
    }
    assert RateCard.current().default_rate == Decimal("1.5")  # not in the file: unchanged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("country,rate\nXX,1\n", "Line 2: 'XX' is not a known ISO 3166 country code."),
        ("country,rate\nUSA,1\n", "'USA' is not a known ISO 3166 country code"),
        ("country,rate\nUS,abc\n", "Line 2: 'abc' is not a number."),
        ("country,rate\nUS,-1\n", "'-1' is negative"),
        ("country,rate\nUS,0.00001\n", "more than 4 decimal places"),
        ("country,rate\nUS,NaN\n", "not a finite number"),
        ("country,rate\nUS,\n", "the rate is empty"),
        ("country,rate\nUS,1\nUS,2\n", "Line 3: US is already on line 2."),
        ("country,rate,enabled\nUS,1,maybe\n", "enabled must be yes or no, not 'maybe'"),
        ("country,rate,enabled\ndefault,1,no\n", "the default rate cannot be disabled"),
        ("name,price\nUS,1\n", "The header must name a 'country' column"),
        ("", "The file is empty"),
        ("country,rate\n", "The file has a header but no rates."),
    ],
)
def test_bad_rate_cards_are_refused_whole_with_clear_errors(text, expected):
    CountryRateFactory(country="US", rate=Decimal("7"))
    with pytest.raises(ValidationError) as excinfo:
        rate_card_load(text=text)
    assert any(expected in message for message in excinfo.value.messages), excinfo.value.messages
    assert dict(CountryRate.objects.values_list("country", "rate")) == {"US": Decimal("7")}


def test_every_bad_line_is_reported_and_good_lines_are_not_written():
    text = "country,rate\nUS,1\nZZ,2\nDE,two\nFR,3\n"
    with pytest.raises(ValidationError) as excinfo:
        rate_card_parse(text)
    assert [m.split(":")[0] for m in excinfo.value.messages] == ["Line 3", "Line 4"]
    with pytest.raises(ValidationError):
        rate_card_load(text=text)
    assert not CountryRate.objects.exists()


def test_load_rate_card_command(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text(GOOD, encoding="utf-8")
    out = StringIO()
    call_command("load_rate_card", str(path), "--dry-run", stdout=out)
    assert "3 countries would be added" in out.getvalue() and not CountryRate.objects.exists()
    call_command("load_rate_card", str(path), stdout=out)
    assert CountryRate.objects.count() == 3
    path.write_text("country,rate\nUS,1\nQQ,x\n", encoding="utf-8")
    with pytest.raises(CommandError) as excinfo:
        call_command("load_rate_card", str(path))
    assert "Nothing was written" in str(excinfo.value) and "Line 3" in str(excinfo.value)
    assert CountryRate.objects.get(country="US").rate == Decimal("1")


# --- the admin --------------------------------------------------------------------------------
@pytest.fixture
def operator(client, user_factory):
    user = user_factory(username="operator", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_operator_loads_a_rate_card_csv_in_the_admin(operator):
    url = reverse("admin:credits_countryrate_load_csv")
    bad = operator.post(url, {"file": SimpleUploadedFile("r.csv", b"country,rate\nUS,1\nXX,1\n")})
    assert bad.status_code == 200 and "not a known ISO 3166 country code" in bad.content.decode()
    assert not CountryRate.objects.exists()
    good = operator.post(url, {"file": SimpleUploadedFile("r.csv", GOOD.encode())})
    assert good.status_code == 302 and CountryRate.objects.count() == 3
    listing = operator.get(reverse("admin:credits_countryrate_changelist"))
    assert "Load CSV" in listing.content.decode() and "France" in listing.content.decode()
    exported = operator.get(reverse("admin:credits_countryrate_export_csv"))
    text = b"".join(exported.streaming_content).decode("utf-8-sig")
    assert '"FR","2.0000","no"' in text


def test_operator_grants_and_adjusts_in_the_admin(operator, tenancy):
    url = reverse("admin:credits_creditentry_add")
    answer = operator.post(
        url, {"brand": tenancy.brand_a.pk, "kind": "grant", "amount": "40", "note": "Trial"}
    )
    assert answer.status_code == 302
    entry = CreditEntry.objects.get()
    assert entry.amount == 40 and entry.actor.username == "operator"
    refused = operator.post(url, {"brand": tenancy.brand_a.pk, "kind": "grant", "amount": "-4"})
    assert refused.status_code == 200 and "positive number" in refused.content.decode()
    too_much = operator.post(
        url, {"brand": tenancy.brand_a.pk, "kind": "adjust", "amount": "-41", "note": "x"}
    )
    assert too_much.status_code == 302 and CreditEntry.objects.count() == 1
    operator.post(url, {"brand": tenancy.brand_a.pk, "kind": "adjust", "amount": "-5", "note": "x"})
    assert credits_available(brand=tenancy.brand_a) == Decimal("35")
    view = operator.get(reverse("admin:credits_creditentry_change", args=[entry.pk]))
    assert view.status_code == 200 and 'name="amount"' not in view.content.decode()
    delete = operator.get(reverse("admin:credits_creditentry_delete", args=[entry.pk]))
    assert delete.status_code == 403


# --- countries ----------------------------------------------------------------------------------
def test_country_comes_from_the_number():
    assert phone_country("+14155550101") == "US"
    assert phone_country("+14165550199") == "CA"
    assert phone_country("+447400123456") == "GB"
    assert phone_country("+447911123456") == "GG"  # Guernsey shares +44
    assert phone_country("+33612345678") == "FR"
    assert phone_country("") == "" and phone_country("not a number") == ""


def _parsed_country(e164: str) -> str:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return ""
    return region if region and region != "ZZ" else ""


@given(st.integers(min_value=0, max_value=10**14 - 1), st.integers(min_value=1, max_value=14))
def test_north_american_fast_path_finds_what_parse_finds(number, width):
    """+1 numbers skip ``phonenumbers.parse``: the same country for any digits after +1."""
    e164 = "+1" + str(number).zfill(width)[-width:]
    assert phone_country(e164) == _parsed_country(e164)


def test_every_north_american_region_is_found():
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            assert phone_country(e164) == _parsed_country(e164) == region


# --- the estimate shown before scheduling --------------------------------------------------------
def add(project, first, phone, **extra):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone, **extra)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def audience(tenancy):
    set_default_rate("3")
    CountryRateFactory(country="US", rate=Decimal("1"))
    CountryRateFactory(country="GB", rate=Decimal("2"))
    CountryRateFactory(country="FR", rate=Decimal("1"), enabled=False)
    project = tenancy.project_a
    tenancy.participant_a.delete()
    add(project, "Ada", "+14155550101")
    add(project, "Twin", "+14155550101")  # the same number: sent once
    add(project, "Alan", "+447400123456")
    add(project, "Maximiliana", "+14155550102")
    add(project, "Zoé", "+33612345678")  # disabled country
    add(project, "Otto", "+4915112345678")  # no rate: the default
    add(project, "Nemo", "")  # no phone
    add(project, "Olive", "+14155550109")
    OptOutFactory(brand=tenancy.brand_a, address="+14155550109")
    return project


def test_estimate_counts_recipients_by_country_times_their_segments(tenancy, audience):
    grant(tenancy.brand_a, 5)
    text = "x" * 150 + " ${first_name}"  # Ada 154 (1 segment), Maximiliana 162 (2)
    estimate = credits_estimate(project=audience, message=text, conditions=[])
    by_country = {row["country"]: row for row in estimate["by_country"]}
    assert by_country["US"]["recipients"] == 2  # Ada (or her twin) and Maximiliana
    assert by_country["US"]["segments"] == 3 and by_country["US"]["credits"] == Decimal("3")
    assert by_country["GB"]["credits"] == Decimal("2")
    assert by_country["DE"]["credits"] == Decimal("3") and by_country["DE"]["rate"] == 3
    assert by_country["FR"]["enabled"] is False and by_country["FR"]["credits"] == 0
    assert estimate["recipients"] == 4 and estimate["skipped"] == 1
    assert estimate["credits"] == Decimal("8") and estimate["segments"] == 5
    assert estimate["available"] == Decimal("5")
    assert estimate["covered"] is False and estimate["shortfall"] == Decimal("3")
    assert estimate["self_service"] is False


def test_estimate_follows_conditions_and_links(tenancy, audience):
    grant(tenancy.brand_a, 100)
    only_alan = [{"criterion": "first_name", "operator": "is", "value": "Alan"}]
    text = "Hi ${first_name}, tell us: ${link}"
    estimate = credits_estimate(project=audience, message=text, conditions=only_alan)
    assert estimate["recipients"] == 1 and estimate["credits"] == Decimal("2")
    assert estimate["covered"] is True
    long_text = "y" * 130 + " ${link}"  # the link is ~35 characters: two segments
    two = credits_estimate(project=audience, message=long_text, conditions=only_alan)
    assert two["segments"] == 2 and two["credits"] == Decimal("4")


def test_estimate_uses_metadata_fields_and_ucs2(tenancy, audience):
    person = PersonFactory(brand=tenancy.brand_a, first_name="Jo", phone="+14155550150")
    ParticipantFactory(project=audience, person=person, metadata={"Team": "ł" * 70})
    only_jo = [{"criterion": "first_name", "operator": "is", "value": "Jo"}]
    estimate = credits_estimate(project=audience, message="Team ${Team}", conditions=only_jo)
    assert estimate["segments"] == 2  # "ł" forces UCS-2: 75 units, two segments of 67
    emoji = credits_estimate(project=audience, message="Hi ${first_name} 😀", conditions=only_jo)
    assert emoji["segments"] == 1


def test_self_service_estimate_costs_no_credits(tenancy, audience):
    Brand.objects.filter(pk=tenancy.brand_a.pk).update(
        integration_model=Brand.IntegrationModel.SELF_SERVICE
    )
    tenancy.brand_a.refresh_from_db()
    audience.brand.refresh_from_db()
    estimate = credits_estimate(project=audience, message="Hi", conditions=None)
    assert estimate["self_service"] is True and estimate["credits"] == 0
    assert estimate["covered"] is True and estimate["available"] is None
    assert estimate["segments"] == 4
    assert credits_available(brand=audience.brand) is None


def test_consumed_is_not_tracked_for_email(tenancy):
    assert credits_consumed(distribution=DistributionFactory(channel="email")) is None
    assert credits_consumed(distribution=DistributionFactory(project=tenancy.project_a)) == 0


def test_country_matches_phonenumbers_on_every_regions_example_numbers():
    import phonenumbers

    from participants.phones import phone_country as reference

    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            expected = reference(number)
            assert phone_country(number) == (expected if len(expected) == 2 else ""), number
    assert phone_country("+80012345678") == ""  # international freephone: no country


@given(
    pieces=st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_characters="${}"), max_size=12),
            st.sampled_from(
                ["${first_name}", "${ last_name }", "${link}", "${Team}", "${role}", "${x}"]
            ),
        ),
        max_size=8,
    ),
    values=st.lists(st.text(max_size=10), min_size=6, max_size=6),
)
def test_the_estimates_text_builder_renders_like_the_sender(pieces, values):
    from credits.estimate import text_builder
    from participants.rendering import piped_fields, render

    template = "".join(pieces)
    names = [n for n in dict.fromkeys(piped_fields(template)) if n not in ("link", "opt_out_link")]
    by_name = dict(zip(["first_name", "last_name", "role", "Team", "x", "y"], values, strict=True))
    fixed = {"link": "http://x/s/0000000000", "opt_out_link": "http://x/o/1"}
    builtin = {"first_name", "last_name", "role"}
    rendered = render(
        template,
        {**fixed, **{n: by_name.get(n, "") for n in names if n in builtin}},
        {n: by_name.get(n, "") for n in names if n not in builtin},
    )
    built = text_builder(template, names, fixed)([by_name.get(n, "") for n in names])
    assert built == rendered
