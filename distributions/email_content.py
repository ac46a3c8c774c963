"""The content of an email: the HTML body made safe, its plain-text part, per-recipient rendering.

- ``sanitize_html`` keeps formatting (tags, ``style``, links and images) and strips scripts,
  event handlers and ``javascript:`` URLs (nh3, the Rust ammonia sanitiser). It runs on the body
  when a distribution is saved and on every preview.
- ``html_to_text`` makes the plain-text part when none is given: paragraphs and line breaks
  kept, links written ``text (url)``.
- ``render_email`` pipes one recipient's values into subject, HTML and text: values are
  HTML-escaped in the HTML part (a first name cannot inject markup).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser

import nh3

from participants.rendering import render

ATTRIBUTES = {
    "*": {"style", "class", "align", "dir", "lang", "title"},
    "a": {"href", "name", "target"},
    "img": {"src", "alt", "width", "height", "border"},
    "table": {"width", "cellpadding", "cellspacing", "border", "bgcolor"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "font": {"color", "face", "size"},
}
TAGS = nh3.ALLOWED_TAGS | {"font"}
URL_SCHEMES = {"http", "https", "mailto", "tel"}


def sanitize_html(value: str) -> str:
    """``value`` without scripts, event handlers or dangerous URLs (formatting kept)."""
    return nh3.clean(
        value or "",
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel=None,
        strip_comments=True,
    )


class _TextWriter(HTMLParser):
    BLOCKS = {"p", "div", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6"}
    BLOCKS |= {"blockquote", "pre", "header", "footer", "section", "article"}
    SKIP = {"style", "script", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href: list[str | None] = []
        self.link_text: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
            self.link_text.append("")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self.href:
            href, text = self.href.pop(), self.link_text.pop()
            if href and href.strip() != text.strip():
                self.parts.append(f" ({href})" if text.strip() else href)

    def handle_data(self, data):
        if self.skipping:
            return
        text = re.sub(r"\s+", " ", data)
        if self.link_text:
            self.link_text[-1] += text
        self.parts.append(text)


def html_to_text(value: str) -> str:
    """A readable plain-text version of an HTML body."""
    writer = _TextWriter()
    writer.feed(value or "")
    writer.close()
    text = "".join(writer.parts)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def render_email(
    *,
    subject: str,
    html_body: str,
    text_body: str,
    values: Mapping[str, str],
    metadata: Mapping[str, object],
) -> RenderedEmail:
    """One recipient's email. ``html_body`` is the (sanitised) template; ``text_body`` empty
    means: generated from the rendered HTML."""
    escaped_values = {key: html.escape(value or "") for key, value in values.items()}
    escaped_metadata = {key: html.escape(str(value)) for key, value in metadata.items()}
    rendered_html = render(html_body, escaped_values, escaped_metadata)
    text = render(text_body, values, metadata) if text_body.strip() else html_to_text(rendered_html)
    # A subject is one line: piped values cannot add headers.
    rendered_subject = " ".join(render(subject, values, metadata).split())
    return RenderedEmail(subject=rendered_subject, html=rendered_html, text=text)
