"""CSV downloads that stream in constant memory and cannot run formulas in a spreadsheet."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from django.core.exceptions import ValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter

DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
ENCLOSURES = {"double": '"', "single": "'", "none": ""}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A cell that is only a number (a phone number like +14155550100, a negative amount) cannot
# run anything; leave it readable.
PLAIN_NUMBER = re.compile(r"^[+-]?[\d\s().]*\d[\d\s().]*$")


def neutralise(value) -> str:
    """Prefix a quote to cells a spreadsheet would evaluate (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_START) and not PLAIN_NUMBER.match(text):
        return "'" + text
    return text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_dialect_options(delimiter: str = "comma", enclosure: str = "double") -> dict:
    """The ``csv.writer`` options of a download, or ValidationError naming each unknown option
    (``delimiter``, ``enclosure``) with its choices: raised before anything is streamed."""
    errors = {}
    if delimiter not in DELIMITERS:
        errors["delimiter"] = f"'{delimiter}' is not one of {', '.join(DELIMITERS)}."
    if enclosure not in ENCLOSURES:
        errors["enclosure"] = f"'{enclosure}' is not one of {', '.join(ENCLOSURES)}."
    if errors:
        raise ValidationError(errors)
    quote = ENCLOSURES[enclosure]
    options = {"delimiter": DELIMITERS[delimiter], "lineterminator": "\r\n"}
    if quote:
        options.update(quotechar=quote, quoting=csv.QUOTE_ALL)
    else:
        options.update(quoting=csv.QUOTE_NONE, escapechar="\\")
    return options


def csv_rows(
    header: list[str],
    rows: Iterable[Iterable],
    *,
    delimiter: str = "comma",
    enclosure: str = "double",
    bom: bool = True,
) -> Iterator[str]:
    """The CSV text line by line (with a UTF-8 BOM so spreadsheets read accents).

    The options are checked here, when called, not when the first line is read: a streamed
    response has sent its 200 by then."""
    writer = csv.writer(_Echo(), **csv_dialect_options(delimiter, enclosure))
    return _lines(writer, header, rows, bom=bom)


def _lines(writer, header: list[str], rows: Iterable[Iterable], *, bom: bool) -> Iterator[str]:
    yield ("\ufeff" if bom else "") + writer.writerow(header)
    for row in rows:
        yield writer.writerow([neutralise(cell) for cell in row])


CSV_PARAMETERS = [
    OpenApiParameter("delimiter", enum=list(DELIMITERS), default="comma"),
    OpenApiParameter("enclosure", enum=list(ENCLOSURES), default="double"),
]


def csv_response(request, *, header, rows, filename: str) -> StreamingHttpResponse:
    """Stream ``rows`` as CSV in the caller's ``?delimiter=`` and ``?enclosure=``."""
    lines = csv_rows(
        header,
        rows,
        delimiter=request.query_params.get("delimiter", "comma"),
        enclosure=request.query_params.get("enclosure", "double"),
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_download(lines, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
