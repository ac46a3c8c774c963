"""CSV downloads that stream in constant memory and cannot run formulas in a spreadsheet."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

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
    if delimiter not in DELIMITERS:
        raise ValueError(f"delimiter must be one of {', '.join(DELIMITERS)}")
    if enclosure not in ENCLOSURES:
        raise ValueError(f"enclosure must be one of {', '.join(ENCLOSURES)}")
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
    """Yield the CSV text line by line (with a UTF-8 BOM so spreadsheets read accents)."""
    writer = csv.writer(_Echo(), **csv_dialect_options(delimiter, enclosure))
    yield ("\ufeff" if bom else "") + writer.writerow(header)
    for row in rows:
        yield writer.writerow([neutralise(cell) for cell in row])
