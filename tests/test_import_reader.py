"""Reading participant files: encodings, delimiters, headers, cells. No database."""

import io

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from participants.importer import (
    CsvSource,
    DuplicateTracker,
    FileError,
    RowRecord,
    RowValidator,
    formula_start,
    map_header,
    neutralise_for_spreadsheet,
)
from participants.phones import _fast_e164, phone_to_e164
from tests.factories.participants import csv_bytes

HEADER = ["PersonID", "First name", "Last name", "Email", "Phone number", "Role", "Department"]
ROW = ["E-1", "Zoë", "Ångström", "zoe@example.com", "+44 7911 123456", "Manager", "Ventes & Été"]


def read(data: bytes) -> tuple[CsvSource, list[tuple[int, list[str]]]]:
    source = CsvSource(io.BytesIO(data), size=len(data))
    source.detect()
    return source, list(source.rows())


# --- Encodings and delimiters -------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding,bom,expected",
    [
        ("utf-8", False, "utf-8"),
        ("utf-8", True, "utf-8-sig"),
        ("cp1252", False, "cp1252"),
        ("utf-16", False, "utf-16"),  # Excel's "Unicode text" (has its own BOM)
    ],
)
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_encodings_and_delimiters_are_detected(encoding, bom, expected, delimiter):
    data = csv_bytes([HEADER, ROW, ROW], delimiter=delimiter, encoding=encoding, bom=bom)
    source, rows = read(data)
    assert (source.encoding, source.delimiter) == (expected, delimiter)
    assert rows[0] == (1, HEADER)  # no BOM left in "PersonID"
    assert rows[1] == (2, ROW)  # accents decoded right


def test_cp1252_is_chosen_even_when_the_first_megabyte_is_ascii():
    filler = [[f"E-{i}", "Ann", "Lee", f"a{i}@x.com", "", "", "x"] for i in range(40_000)]
    data = csv_bytes([HEADER, *filler, ROW], encoding="cp1252")
    assert len(data) > 1_100_000
    source, rows = read(data)
    assert source.encoding == "cp1252"
    assert rows[-1][1][1] == "Zoë"


def test_excel_sep_hint_line_sets_the_delimiter():
    data = b"sep=|\r\nPersonID|Email\r\nE-1|a@x.com\r\n"
    source, rows = read(data)
    assert source.delimiter == "|"
    assert rows == [(2, ["PersonID", "Email"]), (3, ["E-1", "a@x.com"])]


def test_semicolon_file_with_commas_inside_values():
    data = b"PersonID;Name;City\nE-1;Lee, Ann;Paris, FR\nE-2;Ray, Bo;Lyon\n"
    source, rows = read(data)
    assert source.delimiter == ";"
    assert rows[1][1] == ["E-1", "Lee, Ann", "Paris, FR"]


def test_quoted_multiline_values_keep_spreadsheet_row_numbers():
    data = b'PersonID,Note\r\nE-1,"two\r\nlines"\r\n\r\nE-2,x\r\n'
    _, rows = read(data)
    assert rows == [
        (1, ["PersonID", "Note"]),
        (2, ["E-1", "two\r\nlines"]),
        (3, []),
        (4, ["E-2", "x"]),
    ]


# --- Files that are not CSV ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,fragment",
    [
        (b"", "The file is empty."),
        (b"PK\x03\x04\x14\x00\x06\x00rest-of-xlsx", "Excel (.xlsx)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Excel workbook (.xls)"),
        (b"%PDF-1.7\n...", "PDF document"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"PersonID,Email\n\x00\x01\x02", "NUL bytes"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML or XML"),
        (b'[{"person_id": "E-1"}]', "looks like JSON"),
        (b"\r\n\r\n   \r\n", "contains only blank lines"),
        (b"PersonID,Email\nE-1,\x81\x8d\x8f@x.com\n", "neither UTF-8 nor Windows-1252"),
    ],
)
def test_files_that_are_not_csv_get_a_precise_message(data, fragment):
    with pytest.raises(FileError) as excinfo:
        read(data)
    assert fragment in str(excinfo.value)


def test_a_quote_that_never_closes_names_its_row():
    data = b'PersonID,Note\nE-1,ok\nE-2,"starts here\n' + b"x" * 140_000 + b"\n"
    with pytest.raises(FileError) as excinfo:
        read(data)
    assert str(excinfo.value).startswith("Row 3: a value is longer than 131,072 characters")
    assert 'double quote (") that opens a value and is never closed' in str(excinfo.value)


# --- Header ---------------------------------------------------------------------------------------


def test_header_matching_ignores_case_spaces_and_separators():
    header = map_header(
        [
            " PERSON ID ",
            "first_name",
            "LastName",
            "e-mail",
            " user name",
            "  phone  ",
            "ROLE",
            "Team",
        ],
        for_project=True,
    )
    assert [c.field or c.metadata_key for c in header.columns] == [
        "person_id",
        "first_name",
        "last_name",
        "email",
        "username",
        "phone",
        "role",
        "Team",
    ]


@pytest.mark.parametrize(
    "name", ["ExternalDataReference", "external data reference", "External ID"]
)
def test_external_data_reference_is_a_person_id(name):
    header = map_header([name, "Email"], for_project=True)
    assert header.columns[0].field == "person_id"


def test_phone_and_phone_number_together_are_refused():
    with pytest.raises(FileError) as excinfo:
        map_header(["PersonID", "Phone", "Email", "phone number"], for_project=True)
    assert str(excinfo.value) == (
        "Columns 'Phone' (column 2) and 'phone number' (column 4) both give the Phone number: "
        "keep only one of them."
    )


def test_duplicate_metadata_column_is_refused():
    with pytest.raises(FileError) as excinfo:
        map_header(["PersonID", "Team", "TEAM "], for_project=True)
    assert "Column 'TEAM' appears twice (columns 2 and 3)" in str(excinfo.value)


def test_a_header_without_any_known_column_is_not_a_participant_file():
    with pytest.raises(FileError) as excinfo:
        map_header(["Dear team, please find attached"], for_project=True)
    assert "The first row is not a header this import understands" in str(excinfo.value)


def test_without_person_id_or_email_rows_cannot_be_matched():
    with pytest.raises(FileError) as excinfo:
        map_header(["First name", "Last name", "Phone"], for_project=True)
    assert "no PersonID (or ExternalDataReference) column and no Email column" in str(excinfo.value)


@pytest.mark.parametrize(
    "required,fragment",
    [
        (["phone"], "'Phone number' or 'Phone' column (the name is not case-sensitive)"),
        (["name"], "'First name' or 'Last name' column"),
    ],
)
def test_missing_required_column_is_named(required, fragment):
    with pytest.raises(FileError) as excinfo:
        map_header(["PersonID", "Email"], for_project=True, required_fields=required)
    assert fragment in str(excinfo.value)


def test_opted_out_column_is_ignored_with_a_warning_and_role_in_a_directory_import():
    header = map_header(["PersonID", "Opted out", "Role"], for_project=False)
    assert [c.ignored for c in header.columns] == [
        "",
        "opt-outs are never imported",
        "roles belong to project participants",
    ]
    assert len(header.warnings) == 2 and "'Opted out' is ignored" in header.warnings[0]


def test_formula_in_the_header_is_refused():
    with pytest.raises(FileError) as excinfo:
        map_header(["PersonID", "=HYPERLINK(1)"], for_project=True)
    assert "starts with '=' and would run as a formula" in str(excinfo.value)


# --- Rows -----------------------------------------------------------------------------------------


def validator(cells=HEADER, **kwargs) -> RowValidator:
    kwargs.setdefault("country", "US")
    header = map_header(cells, for_project=True, required_fields=kwargs.get("required_fields", ()))
    return RowValidator(header=header, **kwargs)


def test_a_valid_row_becomes_a_typed_record():
    record, errors = validator().check_cells(
        2, [" E-1 ", "Ann", "", "ANN@X.COM", "(415) 555-0100", "", "Ops"]
    )
    assert errors == []
    assert record == RowRecord(
        number=2,
        person_id="E-1",
        first_name="Ann",
        last_name="",
        email="ann@x.com",
        phone="+14155550100",
        role="",
        metadata={"Department": "Ops"},
    )
    assert record.username is None  # no such column: left untouched on update


def test_phone_country_column_reads_national_numbers():
    v = validator([*HEADER, "Phone country"])
    record, errors = v.check_cells(2, ["E-1", "", "", "", "07911 123456", "", "", "gb"])
    assert errors == [] and record.phone == "+447911123456"
    _, errors = v.check_cells(3, ["E-2", "", "", "", "07911 123456", "", "", "UK"])
    assert errors[0].message == (
        "'UK' is not a two-letter ISO 3166 country code (such as US, GB, FR)."
    )


def test_row_errors_name_row_column_value_and_reason():
    _, errors = validator().check_cells(
        7, ["E-1", "Ann", "Lee", "not-an-email", "12", "Manager", "=SUM(A1:A9)"]
    )
    assert [(e.row, e.column, e.value) for e in errors] == [
        (7, "Email", "not-an-email"),
        (7, "Phone number", "12"),
        (7, "Department", "=SUM(A1:A9)"),
    ]
    assert errors[0].message == "'not-an-email' is not a valid email address."
    assert errors[1].message == "'12' is not a valid phone number for US."
    assert errors[2].message.startswith(
        "Starts with '=', which a spreadsheet would run as a formula."
    )


def test_more_cells_than_the_header_is_an_error_but_trailing_empty_cells_are_not():
    v = validator(delimiter=";")
    _, errors = v.check_cells(4, [*ROW, "extra"])
    assert errors[0].message.startswith(
        "The row has 8 values but the header has 7 columns: a value probably contains an "
        "unquoted ';'."
    )
    record, errors = v.check_cells(5, [*ROW, "", " "])
    assert errors == [] and record.person_id == "E-1"


def test_fewer_cells_than_the_header_are_empty_cells():
    record, errors = validator().check_cells(2, ["E-1", "Ann"])
    assert errors == [] and record.email == "" and record.metadata == {"Department": ""}


def test_blank_rows_are_skipped_silently():
    assert validator().check_cells(9, ["", " ", ""]) == (None, [])


def test_a_row_needs_a_person_id_or_an_email():
    _, errors = validator().check_cells(3, ["", "Ann", "Lee", "", "+14155550100", "", ""])
    assert errors[0].message.startswith("The row has neither a PersonID nor an Email")


def test_required_phone_makes_an_empty_phone_an_error():
    _, errors = validator(required_fields=["phone"]).check_cells(
        3, ["E-1", "Ann", "Lee", "", "", "", ""]
    )
    assert errors[0].column == "Phone number"
    assert errors[0].message == "Empty, but this import requires Phone number."


def test_values_longer_than_the_field_are_refused():
    _, errors = validator().check_cells(2, ["E-1", "x" * 151, "", "", "", "", ""])
    assert (errors[0].column, errors[0].message) == ("First name", "Longer than 150 characters.")


def test_a_value_under_a_column_without_header_is_an_error():
    v = validator(["PersonID", "", "Email"])
    _, errors = v.check_cells(2, ["E-1", "surprise", "a@x.com"])
    assert errors[0].message.startswith("Column 2 has no header, so this value cannot be stored")


# --- Formula-looking cells ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("=1+1", "="),
        ("@SUM(A1)", "@"),
        ("+cmd|' /C calc'!A0", "+"),
        ("-2+3", "-"),
        ("-5", None),
        ("+3.5", None),
        ("-1,000.50", None),
        ("+44 20 7946 0958", None),
        ("-", None),
        ("50%", None),
        ("Sales", None),
        ("'=1+1", None),
    ],
)
def test_formula_start(value, expected):
    assert formula_start(value) == expected


def test_phone_numbers_starting_with_plus_are_phones_not_formulas():
    record, errors = validator().check_cells(2, ["E-1", "", "", "", "+33 6 12 34 56 78", "", ""])
    assert errors == [] and record.phone == "+33612345678"


def test_an_apostrophe_keeps_a_formula_looking_cell_as_text_and_is_stored():
    record, errors = validator().check_cells(2, ["E-1", "", "", "", "", "", "'=not a formula"])
    assert errors == [] and record.metadata == {"Department": "'=not a formula"}


def test_exports_neutralise_formula_cells_and_keep_phones_and_numbers():
    assert neutralise_for_spreadsheet("=1+1") == "'=1+1"
    assert neutralise_for_spreadsheet("@x") == "'@x"
    assert neutralise_for_spreadsheet("\t=1") == "'\t=1"
    assert neutralise_for_spreadsheet("+447911123456") == "+447911123456"
    assert neutralise_for_spreadsheet("-5") == "-5"
    assert neutralise_for_spreadsheet(None) == ""


# --- Duplicates within one file -------------------------------------------------------------------


def test_every_row_of_a_duplicated_person_id_is_an_error():
    tracker = DuplicateTracker()
    labels = {"person_id": "PersonID", "email": "Email"}
    assert tracker.check(RowRecord(2, person_id="E-1", email="a@x.com"), labels) is None
    later = tracker.check(RowRecord(5, person_id="E-1"), labels)
    assert later.message == "PersonID 'E-1' is also on row 2: a person may appear once."
    assert tracker.late[2].message == "PersonID 'E-1' is also on row 5: a person may appear once."
    third = tracker.check(RowRecord(9, person_id="E-1"), labels)
    assert third.row == 9 and list(tracker.late) == [2]


def test_rows_without_person_id_collide_on_email_and_with_person_id_rows():
    tracker = DuplicateTracker()
    labels = {}
    assert tracker.check(RowRecord(2, email="a@x.com"), labels) is None
    assert (
        "neither row has a PersonID" in tracker.check(RowRecord(3, email="a@x.com"), labels).message
    )
    assert tracker.check(RowRecord(4, email="b@x.com"), labels) is None
    assert tracker.check(RowRecord(5, person_id="E-5", email="b@x.com"), labels) is None
    assert tracker.late[4].message.startswith(
        "Email 'b@x.com' is also on row 5 with PersonID 'E-5'"
    )
    error = tracker.check(RowRecord(6, person_id=None, email="b@x.com"), labels)
    assert error is not None and error.row == 6


# --- Phones ---------------------------------------------------------------------------------------


@given(
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    mobile=st.booleans(),
    tweak=st.integers(min_value=0, max_value=10**6),
)
@settings(max_examples=400, deadline=None)
def test_the_fast_phone_path_agrees_with_the_full_parser(region, mobile, tweak):
    kind = (
        phonenumbers.PhoneNumberType.MOBILE if mobile else phonenumbers.PhoneNumberType.FIXED_LINE
    )
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        return
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    digits = list(e164[1:])
    position = tweak % len(digits)
    digits[position] = str((int(digits[position]) + tweak) % 10)
    candidate = "+" + "".join(digits)
    fast = _fast_e164(candidate)
    if fast is None:
        return
    parsed = phonenumbers.parse(candidate, "US")
    assert phonenumbers.is_valid_number(parsed)
    assert fast == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@given(
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    mobile=st.booleans(),
    tweak=st.integers(min_value=0, max_value=10**6),
    style=st.sampled_from(["national", "digits"]),
)
@settings(max_examples=600, deadline=None)
def test_the_fast_path_for_national_numbers_agrees_with_the_full_parser(
    region, mobile, tweak, style
):
    kind = (
        phonenumbers.PhoneNumberType.MOBILE if mobile else phonenumbers.PhoneNumberType.FIXED_LINE
    )
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        return
    text = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    digits = [c for c in text if c.isdigit()]
    position = tweak % len(digits)
    digits[position] = str((int(digits[position]) + tweak) % 10)
    candidate = (
        "".join(digits)
        if style == "digits"
        else text.replace(next(c for c in text if c.isdigit()), digits[0], 1)
    )
    fast = _fast_e164(candidate, region)
    if fast is None:
        return
    parsed = phonenumbers.parse(candidate, region)
    assert phonenumbers.is_valid_number(parsed), candidate
    assert fast == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@pytest.mark.parametrize(
    "raw,country,expected",
    [
        ("+44 (0) 7911 123456", "US", "+447911123456"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("1 (415) 555-0100", "US", "+14155550100"),
        ("011 44 7911 123456", "US", "+447911123456"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("06 1234 5678", "IT", "+390612345678"),
        ("0151 23456789", "DE", "+4915123456789"),  # national prefix inside: full parser
        ("+1 415 555 0100", "GB", "+14155550100"),
        ("0033 6 12 34 56 78", "FR", "+33612345678"),
        ("'+49 151 23456789", "US", "+4915123456789"),
    ],
)
def test_phone_formats_of_many_countries(raw, country, expected):
    assert phone_to_e164(raw.lstrip("'"), default_country=country) == expected
