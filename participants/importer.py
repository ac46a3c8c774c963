"""Reading participant files: encoding, delimiter, header, and each row into a typed record.

Nothing here touches the database. ``CsvSource`` streams a stored upload (bounded memory: one
row at a time); ``map_header`` turns the header row into columns; ``RowValidator`` turns a row
into a ``RowRecord`` or precise ``RowError``s; ``DuplicateTracker`` finds people who appear twice
in one file. ``records_from_json`` feeds the bulk API through the same validator.

Row numbers are the ones a spreadsheet shows: the header is row 1 (blank lines count).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

import phonenumbers

from participants.metadata import normalise_key
from participants.models import Person
from participants.phones import PhoneError, phone_to_e164
from participants.values import (
    FORMULA_CHARS,
    MAX_LENGTHS,
    METADATA_FIELDS_MAX,
    METADATA_KEY_MAX,
    METADATA_VALUE_MAX,
    NOT_SCALAR,
    formula_refusal,
    formula_start,
    metadata_key_refusal,
    metadata_text,
    shorten,
    shown,
    time_zone_error,
)

# --- Columns -------------------------------------------------------------------------------

# field -> (label shown in messages, max length). Order is the export order.
FIELD_LABELS = {
    "person_id": "PersonID",
    "first_name": "First name",
    "last_name": "Last name",
    "email": "Email",
    "username": "User name",
    "phone": "Phone number",
    "time_zone": "Time zone",
    "role": "Role",
}
TEXT_FIELDS = ("person_id", "first_name", "last_name", "email", "username", "role")
PERSON_FIELDS = ("first_name", "last_name", "email", "username", "phone", "time_zone")

# Header spellings, compared after removing case, spaces, "_", "-" and ".".
HEADER_ALIASES = {
    "personid": "person_id",
    "externaldatareference": "person_id",
    "externalid": "person_id",
    "externalreference": "person_id",
    "firstname": "first_name",
    "lastname": "last_name",
    "email": "email",
    "emailaddress": "email",
    "username": "username",
    "phonenumber": "phone",
    "phone": "phone",
    "role": "role",
    "phonecountry": "phone_country",
    "timezone": "time_zone",
}
OPT_OUT_HEADER = "optedout"
# Columns that the error CSV adds: ignored when a corrected error file is uploaded again.
ERROR_FILE_COLUMNS = ("Import row", "Import errors")
REQUIRABLE = {
    "person_id": "PersonID",
    "email": "Email",
    "phone": "Phone number",
    "name": "First name or Last name",
}

MAX_FIELD_CHARS = 131_072  # csv's own limit: a longer cell means a quote that never closes
SNIFF_CHARS = 64 * 1024
READ_CHUNK = 1 << 20


def header_key(text: str) -> str:
    return re.sub(r"[\s_\-.]+", "", text).casefold()


class FileError(Exception):
    """The file as a whole cannot be imported; the message says why and what to do."""


@dataclass(slots=True)
class RowError:
    row: int
    column: str
    value: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "message": self.message,
        }


@dataclass(slots=True)
class RowRecord:
    """One valid row. ``None`` means "no such column" (leave as is); "" means an empty cell."""

    number: int
    person_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    username: str | None = None
    phone: str | None = None
    time_zone: str | None = None
    role: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    field: str | None = None  # a known field
    metadata_key: str | None = None  # or a metadata field
    ignored: str = ""  # or ignored, and why

    def as_dict(self) -> dict[str, Any]:
        kind = self.field or ("metadata" if self.metadata_key else "ignored")
        return {"header": self.header, "kind": kind, "note": self.ignored}


@dataclass
class Header:
    columns: list[Column]
    width: int
    warnings: list[str]

    @property
    def fields(self) -> set[str]:
        return {c.field for c in self.columns if c.field}

    def label(self, name: str) -> str:
        for column in self.columns:
            if column.field == name:
                return column.header
        return FIELD_LABELS.get(name, name)


# --- Cells ---------------------------------------------------------------------------------


def neutralise_for_spreadsheet(value: Any) -> str:
    """Export side: prefix a formula-looking cell with an apostrophe, as OWASP advises.

    Imports refuse such cells unless they already start with the apostrophe, and then store
    them with it, so a value read back from an export is stored unchanged.
    """
    text = "" if value is None else str(value)
    if text and (text[0] in "\t\r" or formula_start(text)):
        return "'" + text
    return text


_shorten = shorten


# --- Reading the file ----------------------------------------------------------------------

_SIGNATURES = (
    (
        b"PK\x03\x04",
        "This is a ZIP archive, such as an Excel (.xlsx) or OpenDocument (.ods) workbook, not "
        "a CSV file. In your spreadsheet choose File › Save as › “CSV UTF-8” and upload that.",
    ),
    (
        b"\xd0\xcf\x11\xe0",
        "This is an old Excel workbook (.xls), not a CSV file. In Excel choose File › Save as "
        "› “CSV UTF-8” and upload that.",
    ),
    (b"%PDF", "This is a PDF document, not a CSV file."),
    (b"\x1f\x8b", "This is a gzip-compressed file, not a CSV file: uncompress it first."),
    (b"\x89PNG", "This is a PNG image, not a CSV file."),
    (b"\xff\xd8\xff", "This is a JPEG image, not a CSV file."),
)


NUL_MESSAGE = (
    "The file contains NUL bytes: it is a binary file, not a text CSV file. (If it is “Unicode "
    "text” from Excel, save it as “CSV UTF-8” instead.)"
)
UPLOAD_SNIFF_BYTES = 64 * 1024


def refuse_binary(head: bytes, *, whole: bool) -> None:
    """Raise FileError when ``head``, the start of a file (``whole``: all of it), is not text:
    a known binary format (by its magic number), NUL bytes outside UTF-16, or bytes that
    neither UTF-8 nor Windows-1252 can read. Cheap enough for the upload request itself."""
    for signature, message in _SIGNATURES:
        if head.startswith(signature):
            raise FileError(message)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return
    if b"\x00" in head:
        raise FileError(NUL_MESSAGE)
    for encoding in ("utf-8", "cp1252"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(head, final=whole)
            return
        except UnicodeDecodeError as exc:
            bad = exc.start
    raise FileError(
        f"The file is neither UTF-8 nor Windows-1252 text (byte {bad + 1} cannot be read). Save "
        "it as “CSV UTF-8” and upload it again."
    )


def refuse_binary_upload(fileobj: BinaryIO) -> None:
    """``refuse_binary`` on the first ``UPLOAD_SNIFF_BYTES`` of an upload (rewound after)."""
    fileobj.seek(0)
    head = fileobj.read(UPLOAD_SNIFF_BYTES + 1)
    fileobj.seek(0)
    refuse_binary(head[:UPLOAD_SNIFF_BYTES], whole=len(head) <= UPLOAD_SNIFF_BYTES)


class _CountingReader(io.RawIOBase):
    """Counts the bytes read, for a progress bar that does not need the row count."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.count += size
        return size


class CsvSource:
    """A stored upload, read as CSV: ``detect()`` once, then ``rows()`` any number of times.

    ``fileobj`` must be a seekable binary file. Memory stays bounded: the file is read in
    chunks to check its encoding, then streamed one row at a time.
    """

    DELIMITERS = (",", ";", "\t")

    def __init__(self, fileobj: BinaryIO, *, size: int | None = None):
        self.fileobj = fileobj
        self.size = size
        self.encoding = ""
        self.delimiter = ","
        self.skip_first_line = False
        self._counter: _CountingReader | None = None

    @property
    def bytes_read(self) -> int:
        return self._counter.count if self._counter else 0

    def detect(self) -> None:
        """Find the encoding and the delimiter, or raise FileError saying what the file is."""
        self.fileobj.seek(0)
        head = self.fileobj.read(8192)
        if not head:
            raise FileError("The file is empty.")
        refuse_binary(head, whole=len(head) < 8192)
        if head.startswith(codecs.BOM_UTF8):
            self.encoding = "utf-8-sig"
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            self.encoding = "utf-16"
        else:
            self.encoding = self._text_encoding()
        sample = self._sample()
        stripped = sample.lstrip()
        if not stripped:
            raise FileError("The file has no header row: it contains only blank lines.")
        if stripped[0] == "<":
            raise FileError("This looks like an HTML or XML document, not a CSV file.")
        if stripped[0] in "{[":
            raise FileError(
                "This looks like JSON, not CSV. Upload a CSV file, or send JSON records to "
                "the bulk API (POST …/participants/bulk/)."
            )
        first_line = sample.split("\n", 1)[0].strip("\r\ufeff ")
        match = re.fullmatch(r"sep=(.)", first_line, flags=re.IGNORECASE)
        if match:  # Excel's "sep=;" hint line
            self.delimiter = match.group(1)
            self.skip_first_line = True
        else:
            self.delimiter = self._sniff_delimiter(sample)

    def _text_encoding(self) -> str:
        """UTF-8 when every byte of the file decodes as UTF-8, else Windows-1252."""
        for encoding in ("utf-8", "cp1252"):
            decoder = codecs.getincrementaldecoder(encoding)()
            self.fileobj.seek(0)
            position = 0
            try:
                while chunk := self.fileobj.read(READ_CHUNK):
                    if b"\x00" in chunk:
                        raise FileError(NUL_MESSAGE)
                    decoder.decode(chunk)
                    position += len(chunk)
                decoder.decode(b"", final=True)
                return encoding
            except UnicodeDecodeError as exc:
                bad = position + exc.start
                if encoding == "cp1252":
                    raise FileError(
                        f"The file is neither UTF-8 nor Windows-1252 text (byte {bad + 1} cannot "
                        "be read). Save it as “CSV UTF-8” and upload it again."
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _text_stream(self) -> io.TextIOWrapper:
        self.fileobj.seek(0)
        self._counter = _CountingReader(self.fileobj)
        buffered = io.BufferedReader(self._counter, buffer_size=1 << 16)
        return io.TextIOWrapper(buffered, encoding=self.encoding, newline="")

    def _sample(self) -> str:
        stream = self._text_stream()
        try:
            return stream.read(SNIFF_CHARS)
        finally:
            stream.detach()

    def _sniff_delimiter(self, sample: str) -> str:
        """The delimiter among , ; TAB that gives the widest header and consistent rows."""
        lines = sample.splitlines()
        if len(sample) >= SNIFF_CHARS and len(lines) > 1:
            lines = lines[:-1]  # the last line may be cut in the middle
        text = "\n".join(lines[:200])
        best, best_score = ",", (False, 0.0, 0)
        for delimiter in self.DELIMITERS:
            try:
                rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
            except csv.Error:
                continue
            if not rows:
                continue
            width = len(rows[0])
            following = rows[1:50]
            consistent = (
                sum(1 for row in following if len(row) == width) / len(following)
                if following
                else 1.0
            )
            score = (width > 1, consistent, width)
            if score > best_score:
                best, best_score = delimiter, score
        return best

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(row number, cells)`` for every record, blank ones included."""
        csv.field_size_limit(MAX_FIELD_CHARS)
        stream = self._text_stream()
        number = 0
        try:
            if self.skip_first_line:
                stream.readline()
                number += 1
            reader = csv.reader(stream, delimiter=self.delimiter)
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise FileError(_csv_error_message(exc, number + 1)) from exc
                number += 1
                yield number, cells
        finally:
            stream.detach()


def _csv_error_message(exc: csv.Error, row: int) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return (
            f"Row {row}: a value is longer than {MAX_FIELD_CHARS:,} characters. This usually "
            'means a double quote (") that opens a value and is never closed.'
        )
    if "NUL" in text:
        return f"Row {row} contains a NUL byte: the file is not plain text."
    return f"Row {row} cannot be read as CSV ({text})."


# --- The header ----------------------------------------------------------------------------


def map_header(
    cells: list[str],
    *,
    for_project: bool,
    required_fields: list[str] | tuple[str, ...] = (),
) -> Header:
    """Map header cells to known fields and metadata, or raise FileError naming the problem."""
    headers = [" ".join((cell or "").replace("\ufeff", "").split()) for cell in cells]
    width = len(headers)
    while width and not headers[width - 1]:
        width -= 1  # trailing empty header cells (a trailing delimiter) are not columns
    columns: list[Column] = []
    warnings: list[str] = []
    seen_fields: dict[str, Column] = {}
    seen_metadata: dict[str, Column] = {}
    for index, header in enumerate(headers[:width]):
        if not header:
            columns.append(Column(index, f"(column {index + 1})", ignored="no header"))
            continue
        char = formula_start(header)
        if char:
            raise FileError(
                f"Column {index + 1} of the header, '{_shorten(header)}', starts with '{char}' "
                "and would run as a formula in a spreadsheet: rename the column."
            )
        key = header_key(header)
        known = HEADER_ALIASES.get(key)
        if header in ERROR_FILE_COLUMNS:
            columns.append(Column(index, header, ignored="added by the error file"))
            continue
        if key == OPT_OUT_HEADER:
            columns.append(Column(index, header, ignored="opt-outs are never imported"))
            warnings.append(
                f"Column '{header}' is ignored: a person is opted out only by their own STOP "
                "reply or opt-out link, and opted back in only by an admin."
            )
            continue
        if known == "role" and not for_project:
            columns.append(Column(index, header, ignored="roles belong to project participants"))
            warnings.append(
                f"Column '{header}' is ignored: a role belongs to a project participant, and "
                "this import goes into the directory only."
            )
            continue
        if known:
            if known in seen_fields:
                other = seen_fields[known]
                label = FIELD_LABELS.get(known, "Phone country")
                raise FileError(
                    f"Columns '{other.header}' (column {other.index + 1}) and '{header}' (column "
                    f"{index + 1}) both give the {label}: keep only one of them."
                )
            column = Column(index, header, field=known)
            seen_fields[known] = column
        else:
            if len(header) > METADATA_KEY_MAX:
                raise FileError(
                    f"Column {index + 1} has a name longer than {METADATA_KEY_MAX} characters "
                    f"('{_shorten(header)}'): shorten it."
                )
            norm = normalise_key(header)
            if norm in seen_metadata:
                other = seen_metadata[norm]
                raise FileError(
                    f"Column '{header}' appears twice (columns {other.index + 1} and "
                    f"{index + 1}): keep only one of them."
                )
            column = Column(index, header, metadata_key=header)
            seen_metadata[norm] = column
        columns.append(column)

    if len(seen_metadata) > METADATA_FIELDS_MAX:
        raise FileError(
            f"The file has {len(seen_metadata):,} metadata columns; a person has at most "
            f"{METADATA_FIELDS_MAX}: remove the columns you do not need."
        )
    present = set(seen_fields)
    found = ", ".join(f"'{h}'" for h in headers[:width] if h) or "(nothing)"
    if not present - {"phone_country"}:
        raise FileError(
            "The first row is not a header this import understands: it has no PersonID, First "
            f"name, Last name, Email, User name, Phone number or Role column (found: {found}). "
            "Is this a CSV file whose first row names the columns?"
        )
    if "person_id" not in present and "email" not in present:
        raise FileError(
            "The file has no PersonID (or ExternalDataReference) column and no Email column, so "
            f"its rows cannot be matched to people. Add one of them (found: {found})."
        )
    for name in required_fields:
        if name == "name":
            missing = not present & {"first_name", "last_name"}
            what = "a 'First name' or 'Last name' column"
        else:
            missing = name not in present
            what = {
                "phone": "a 'Phone number' or 'Phone' column (the name is not case-sensitive)",
                "email": "an 'Email' column",
                "person_id": "a 'PersonID' column",
            }[name]
        if missing:
            raise FileError(
                f"This import requires {REQUIRABLE[name]} for everyone, but the file has no "
                f"such column: add {what} (found: {found})."
            )
    return Header(columns=columns, width=width, warnings=warnings)


# --- Rows ----------------------------------------------------------------------------------

_email_validator = EmailValidator()
_SIMPLE_EMAIL = re.compile(
    r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)


def email_is_valid(value: str) -> bool:
    if _SIMPLE_EMAIL.fullmatch(value):  # the common case, without Django's slower checks
        return True
    try:
        _email_validator(value)
    except ValidationError:
        return False
    return True


class RowValidator:
    """Turns one row into a ``RowRecord``, or into the list of what is wrong with it."""

    def __init__(
        self,
        *,
        header: Header | None,
        country: str,
        required_fields: list[str] | tuple[str, ...] = (),
        for_project: bool = True,
        delimiter: str = ",",
    ):
        self.header = header
        self.country = country
        self.required_fields = tuple(required_fields)
        self.for_project = for_project
        self.delimiter = delimiter
        if header is not None:
            self._fields = [(c.index, c.field) for c in header.columns if c.field]
            self._metadata = [(c.index, c.metadata_key) for c in header.columns if c.metadata_key]
            self._unnamed = [c.index for c in header.columns if c.ignored == "no header"]
            self._labels = {c.field: c.header for c in header.columns if c.field}
            self._labels.update(
                {c.metadata_key: c.header for c in header.columns if c.metadata_key}
            )

    # CSV rows ------------------------------------------------------------------------------
    def check_cells(self, number: int, cells: list[str]) -> tuple[RowRecord | None, list[RowError]]:
        """``(None, [])`` for a blank row; ``(record, [])`` or ``(None, errors)`` otherwise."""
        if not "".join(cells).strip():
            return None, []
        width = self.header.width
        if len(cells) > width and any(cell.strip() for cell in cells[width:]):
            shown = "TAB" if self.delimiter == "\t" else f"'{self.delimiter}'"
            return None, [
                RowError(
                    number,
                    "",
                    "",
                    f"The row has {len(cells)} values but the header has {width} columns: a "
                    f"value probably contains an unquoted {shown}. Put that value in double "
                    "quotes or remove the extra values.",
                )
            ]
        count = len(cells)
        errors = [
            RowError(
                number,
                f"column {index + 1}",
                _shorten(cells[index].strip()),
                f"Column {index + 1} has no header, so this value cannot be stored: name the "
                "column or empty it.",
            )
            for index in self._unnamed
            if index < count and cells[index].strip()
        ]
        values = {name: (cells[index] if index < count else "") for index, name in self._fields}
        metadata = {key: (cells[index] if index < count else "") for index, key in self._metadata}
        record, more = self.check_values(number, values, metadata, self._labels)
        errors.extend(more)
        return (None if errors else record), errors

    # Any source ----------------------------------------------------------------------------
    def check_values(
        self,
        number: int,
        values: dict[str, str | None],
        metadata: dict[str, str],
        labels: dict[str, str],
    ) -> tuple[RowRecord | None, list[RowError]]:
        """Check the present fields (``values``, in column order) and metadata of one row.

        This runs once per row of every import: it loops over the columns present only, and
        tests a cell's first character before anything more expensive.
        """
        errors: list[RowError] = []
        fields: dict[str, str] = {}

        def fail(name: str, value: str, message: str) -> None:
            errors.append(RowError(number, labels.get(name, name), _shorten(value), message))

        country = self.country
        raw_country = values.get("phone_country")
        if raw_country:
            code = raw_country.strip().upper()
            if code in phonenumbers.SUPPORTED_REGIONS:
                country = code
            elif code:
                fail(
                    "phone_country",
                    code,
                    f"'{_shorten(code)}' is not a two-letter ISO 3166 country code "
                    "(such as US, GB, FR).",
                )

        for name, raw in values.items():
            if raw is None:
                continue
            if name == "phone":
                phone = raw.strip()
                if phone[:1] == "'":  # a spreadsheet's text marker (our export adds it)
                    phone = phone[1:].strip()
                if phone:
                    try:
                        fields["phone"] = phone_to_e164(phone, default_country=country)
                    except PhoneError as exc:
                        fail("phone", phone, str(exc))
                else:
                    fields["phone"] = ""
                continue
            if name == "time_zone":
                zone = raw.strip()
                error = time_zone_error(zone)
                if error:
                    fail(name, zone, error)
                else:
                    fields[name] = zone
                continue
            limit = MAX_LENGTHS.get(name)
            if limit is None:  # phone_country: read above, not stored
                continue
            value = raw.strip()
            if value and value[0] in FORMULA_CHARS and self._formula(name, value, fail):
                continue
            if len(value) > limit:
                fail(name, value, f"Longer than {limit} characters.")
                continue
            if name == "email" and value:
                value = value.lower()
                if not email_is_valid(value):
                    fail(name, value, f"'{_shorten(value)}' is not a valid email address.")
                    continue
            fields[name] = value

        clean_metadata: dict[str, str] = {}
        for key, raw in metadata.items():
            value = raw.strip()
            if value and value[0] in FORMULA_CHARS and self._formula(key, value, fail):
                continue
            if len(value) > METADATA_VALUE_MAX:
                fail(key, value, f"Longer than {METADATA_VALUE_MAX} characters.")
                continue
            clean_metadata[key] = value

        if errors:
            return None, errors
        record = RowRecord(number=number, metadata=clean_metadata, **fields)
        for name in self.required_fields:
            if name == "name":
                if not (record.first_name or record.last_name):
                    fail(
                        "first_name",
                        "",
                        "First name and Last name are both empty, but this import requires a name.",
                    )
            elif not getattr(record, name):
                fail(name, "", f"Empty, but this import requires {REQUIRABLE[name]}.")
        if not record.person_id and not record.email:
            errors.append(
                RowError(
                    number,
                    labels.get("person_id", "PersonID"),
                    "",
                    "The row has neither a PersonID nor an Email, so the person could not be "
                    "found again by a later import: fill in one of them.",
                )
            )
        return (None if errors else record), errors

    @staticmethod
    def _formula(name: str, value: str, fail) -> bool:
        """Report ``value`` if a spreadsheet would run it as a formula; True when it did."""
        refusal = formula_refusal(value)
        if refusal is None:
            return False
        fail(name, value, refusal)
        return True


# --- Records sent as JSON (bulk API) ----------------------------------------------------------

JSON_FIELDS = (*Person.DIRECTORY_FIELDS, "role")


def records_from_json(
    records: list[dict[str, Any]], validator: RowValidator
) -> Iterator[tuple[int, RowRecord | None, list[RowError]]]:
    """Validate JSON records (``index`` is the record's 0-based position in the list)."""
    for index, item in enumerate(records):
        if not isinstance(item, dict):
            yield index, None, [RowError(index, "", "", "A record must be a JSON object.")]
            continue
        errors: list[RowError] = []
        values: dict[str, str | None] = {}
        for key, value in item.items():
            if key == "metadata":
                continue
            if key not in JSON_FIELDS or (key == "role" and not validator.for_project):
                reason = (
                    "A role belongs to a project participant; this call has no project."
                    if key == "role"
                    else f"Unknown field. Known fields: {', '.join(JSON_FIELDS)}, metadata."
                )
                errors.append(RowError(index, str(key), "", reason))
                continue
            text = metadata_text(value)  # the fields read JSON scalars as the metadata do
            if text is None:
                errors.append(RowError(index, key, "", "Must be text, a number or null."))
                continue
            values[key] = text
        metadata: dict[str, str] = {}
        raw_metadata = item.get("metadata", {})
        if raw_metadata is None:
            raw_metadata = {}
        if not isinstance(raw_metadata, dict):
            errors.append(
                RowError(index, "metadata", "", "Must be an object of field names to values.")
            )
            raw_metadata = {}
        if len(raw_metadata) > METADATA_FIELDS_MAX:
            errors.append(RowError(index, "metadata", "", f"At most {METADATA_FIELDS_MAX} fields."))
            raw_metadata = {}
        labels = {name: name for name in JSON_FIELDS}
        for key, value in raw_metadata.items():
            name = " ".join(str(key).split())
            label = f"metadata.{shown(name)}"
            if header_key(name) == OPT_OUT_HEADER:
                errors.append(
                    RowError(
                        index,
                        label,
                        "",
                        "'Opted out' cannot be set by an import: it is recorded only by the "
                        "person's own opt-out, and cleared only by an admin's opt-in.",
                    )
                )
                continue
            refusal = metadata_key_refusal(name)
            text = metadata_text(value) if refusal is None else None
            if refusal is None and text is None:
                refusal = NOT_SCALAR
            if refusal is not None:
                errors.append(RowError(index, label, "", refusal))
                continue
            metadata[name] = text
            labels[name] = label
        record, more = validator.check_values(index, values, metadata, labels)
        errors.extend(more)
        yield index, (None if errors else record), errors


# --- The validated rows, spooled between the two phases -------------------------------------

SPOOL_FIELDS = (*Person.DIRECTORY_FIELDS, "role")


@dataclass(frozen=True)
class SpoolLayout:
    """The columns of the validated-rows file: the row number, the known fields the upload
    has, then its metadata fields, all as text. A CSV file: Python's C writer and reader on
    one side, PostgreSQL's COPY on the other, nothing encoded per cell.

    A file record has a value (maybe "") for every column of its header and None for every
    other field, so the layout (kept with the job as its columns) says which fields are None.
    """

    fields: tuple[str, ...]
    metadata_keys: tuple[str, ...]

    @classmethod
    def from_header(cls, header: Header) -> SpoolLayout:
        present = header.fields
        return cls(
            fields=tuple(f for f in SPOOL_FIELDS if f in present),
            metadata_keys=tuple(c.metadata_key for c in header.columns if c.metadata_key),
        )

    @classmethod
    def from_columns(cls, columns: list[dict]) -> SpoolLayout:
        """From ``Column.as_dict()`` rows, as stored on the import job."""
        kinds = {c["kind"] for c in columns}
        return cls(
            fields=tuple(f for f in SPOOL_FIELDS if f in kinds),
            metadata_keys=tuple(c["header"] for c in columns if c["kind"] == "metadata"),
        )

    def writer(self, handle):
        """A CSV writer for ``handle`` (text, newline="")."""
        return csv.writer(handle, lineterminator="\n")

    def row(self, record: RowRecord) -> list:
        metadata = record.metadata
        return [
            record.number,
            *[getattr(record, name) for name in self.fields],
            *[metadata.get(key, "") for key in self.metadata_keys],
        ]

    def records(self, handle, skip: set[int] | frozenset = frozenset()) -> Iterator[RowRecord]:
        """Read the rows back (``handle``: text, newline="") as records, except ``skip``."""
        fields, keys = self.fields, self.metadata_keys
        start = 1 + len(fields)
        for values in csv.reader(handle):
            number = int(values[0])
            if number in skip:
                continue
            record = RowRecord(number, metadata=dict(zip(keys, values[start:], strict=True)))
            for name, value in zip(fields, values[1:start], strict=True):
                setattr(record, name, value)
            yield record


# --- People who appear twice ------------------------------------------------------------------


class DuplicateTracker:
    """Finds rows that point at the same person, in one streaming pass.

    A PersonID may appear once per file; a row without PersonID is identified by its email,
    which then may appear on no other row. Every row involved gets an error: the later ones at
    once, the first one *late* (``late`` maps its row number to its error), because only a
    later row reveals it.
    """

    def __init__(self) -> None:
        # key -> (first row, invalidated): tuples of atomic values, which the garbage
        # collector stops tracking, so 100,000 entries do not slow every collection.
        self._seen: dict[str, tuple[int, bool]] = {}
        self._pid_emails: dict[str, tuple[int, str]] = {}  # email -> (row, PersonID)
        self.late: dict[int, RowError] = {}

    @staticmethod
    def key(record: RowRecord) -> str:
        return f"p:{record.person_id}" if record.person_id else f"e:{record.email}"

    def check(self, record: RowRecord, column_labels: dict[str, str]) -> RowError | None:
        number = record.number
        pid_label = column_labels.get("person_id", "PersonID")
        email_label = column_labels.get("email", "Email")
        key = self.key(record)
        first = self._seen.get(key)
        if first is not None:
            if record.person_id:
                message = "PersonID '{pid}' is also on row {other}: a person may appear once."
                column, value = pid_label, record.person_id
            else:
                message = (
                    "Email '{email}' is also on row {other}, and neither row has a PersonID to "
                    "tell the people apart: add PersonIDs, or keep one of the rows."
                )
                column, value = email_label, record.email
            self._invalidate(key, number, column, value, message, record)
            return RowError(
                number,
                column,
                _shorten(value),
                message.format(pid=record.person_id, email=record.email, other=first[0]),
            )
        if record.person_id and record.email:
            self._pid_emails.setdefault(record.email, (number, record.person_id))
            pidless_key = f"e:{record.email}"
            pidless = self._seen.get(pidless_key)
            if pidless is not None and not pidless[1]:
                self._seen[pidless_key] = (pidless[0], True)
                self.late[pidless[0]] = RowError(
                    pidless[0],
                    email_label,
                    _shorten(record.email),
                    f"Email '{record.email}' is also on row {number} with PersonID "
                    f"'{record.person_id}': add that PersonID to this row, or remove one of "
                    "the rows.",
                )
        if not record.person_id:
            other = self._pid_emails.get(record.email)
            if other is not None:
                self._seen[key] = (number, True)
                return RowError(
                    number,
                    email_label,
                    _shorten(record.email),
                    f"Email '{record.email}' is also on row {other[0]} with PersonID "
                    f"'{other[1]}': add that PersonID to this row, or remove one of the rows.",
                )
        self._seen[key] = (number, False)
        return None

    def _invalidate(self, key, number, column, value, message, record) -> None:
        first = self._seen[key]
        if first[1]:
            return
        self._seen[key] = (first[0], True)
        self.late[first[0]] = RowError(
            first[0],
            column,
            _shorten(value),
            message.format(pid=record.person_id, email=record.email, other=number),
        )
