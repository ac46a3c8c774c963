"""The anonymous link's QR code, as PNG (to print) or SVG (to scale), made by segno."""

from __future__ import annotations

import io

import segno

QR_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
QR_SCALE = 10  # pixels per module: a version 3 code is 330 px wide, enough for a poster
QR_BORDER = 4  # the quiet zone the QR standard asks for


def qr_image(url: str, *, kind: str) -> bytes:
    """The QR code of ``url`` (error correction M: survives a little damage or a logo)."""
    if kind not in QR_FORMATS:
        raise ValueError(f"kind must be one of {', '.join(QR_FORMATS)}")
    code = segno.make(url, error="m")
    out = io.BytesIO()
    options = {"xmldecl": False, "title": "Survey QR code"} if kind == "svg" else {}
    code.save(out, kind=kind, scale=QR_SCALE, border=QR_BORDER, **options)
    return out.getvalue()
