"""Signed anonymous links: URLs a caller builds offline (a push template) from the project's
anonymous link, its own parameters, an expiry and an HMAC signature.

A project may hold one active signing secret (brand or project admins issue, rotate and
revoke it; it is Fernet-encrypted at rest and shown once). ``/a/<token>?venue=Arena&exp=...&
sig=...`` is accepted only when the signature matches the canonical form below with the active
secret (or a rotated one still in the grace period chosen when rotating) and ``exp`` has not
passed. Its parameters then go to the server session and the
browser is sent to the bare anonymous URL; the response stores them as embedded data that is
trusted (not listed in ``untrusted_keys``) and records the signature's use.

Canonical form (docs/links.md has a Python snippet):

    message = "<anonymous link token>\\n" + "&".join(
        name + "=" + value
        for name, value in sorted(             # sorted once escaped
            (quote(k), quote(v))               # RFC 3986: only A-Z a-z 0-9 - . _ ~ unescaped
            for k, v in params                 # every parameter but sig, exp included
        )
    )
    sig = base64url(HMAC-SHA256(secret, message)), without "=" padding

Single use: a signed URL answers once. The sha256 of its signature is unique per project
(``SignedLinkUse``): once a response went in through it, opening it again shows the thank-you
page, and a second submit (another browser, the same URL) is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from brands.rotation import grace_check
from projects.models import Project
from projects.signed_links import SignedLinkUse, SigningSecret

SIGNATURE_PARAMETER = "sig"
EXPIRY_PARAMETER = "exp"
SECRET_PREFIX = "rsl_"  # noqa: S105 - a prefix, not a secret
MAX_PARAMETERS = 20  # besides exp and sig
MAX_NAME = 64
MAX_VALUE = 500
SESSION_PREFIX = "signed-link:"


# --- secrets ---------------------------------------------------------------------------------
def signing_secret_active(*, project: Project) -> SigningSecret | None:
    return SigningSecret.objects.filter(project=project, revoked_at__isnull=True).first()


def signing_secret_issue(
    *, project: Project, actor=None, grace: timedelta = timedelta(0)
) -> tuple[SigningSecret, str]:
    """A new secret for ``project``. The previous one, if any, is rotated out: it stops at
    once, or (``grace``, at most ``brands.rotation.MAX_GRACE``) still verifies URLs for that
    long, so that links already sent keep working while callers switch. Returns the record
    and the secret in clear, which the caller shows once and never again."""
    grace_check(grace)
    plain = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        SigningSecret.objects.filter(project=project, revoked_at__isnull=True).update(
            revoked_at=now, accepted_until=now + grace if grace else None
        )
        record = SigningSecret.objects.create(
            project=project,
            secret=plain,
            hint=plain[-4:],
            created_by=actor if getattr(actor, "pk", None) else None,
        )
    return record, plain


def signing_secret_revoke(*, project: Project) -> bool:
    """Revoke the active secret, and any rotated one still in its grace period: every URL
    signed with them stops answering. True if there was one."""
    now = timezone.now()
    retired = SigningSecret.objects.filter(project=project, accepted_until__gt=now).update(
        accepted_until=now
    )
    active = SigningSecret.objects.filter(project=project, revoked_at__isnull=True).update(
        revoked_at=now
    )
    return bool(active or retired)


def signing_secrets_accepted(
    *, project: Project, now: datetime | None = None
) -> list[SigningSecret]:
    """The secrets that verify URLs now: the active one first, then rotated ones in grace."""
    now = now or timezone.now()
    return list(
        SigningSecret.objects.filter(project=project)
        .filter(Q(revoked_at__isnull=True) | Q(accepted_until__gt=now))
        .order_by(F("revoked_at").desc(nulls_first=True), "-pk")
    )


def signing_secret_in_grace(*, project: Project) -> SigningSecret | None:
    """The rotated secret that still verifies URLs, if any (its hint and end are shown)."""
    return (
        SigningSecret.objects.filter(project=project, accepted_until__gt=timezone.now())
        .order_by("-accepted_until")
        .first()
    )


# --- the canonical form and its check -------------------------------------------------------
def _quote(text: str) -> str:
    return quote(text, safe="-._~")


def canonical_message(token: str, params: list[tuple[str, str]]) -> bytes:
    """What is signed: the anonymous link's token, a newline, the sorted, escaped parameters."""
    escaped = sorted((_quote(k), _quote(v)) for k, v in params)
    query = "&".join(f"{k}={v}" for k, v in escaped)
    return f"{token}\n{query}".encode()


def sign(secret: str, token: str, params: list[tuple[str, str]]) -> str:
    digest = hmac.new(secret.encode(), canonical_message(token, params), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_url(
    *, project: Project, secret: str, params: dict[str, str], expires_at: datetime
) -> str:
    """A signed URL (what the caller's own code does; used by tests and the settings page)."""
    pairs = [(str(k), str(v)) for k, v in params.items()]
    pairs.append((EXPIRY_PARAMETER, str(int(expires_at.timestamp()))))
    signature = sign(secret, project.public_token, pairs)
    query = "&".join(
        f"{_quote(k)}={_quote(v)}" for k, v in [*pairs, (SIGNATURE_PARAMETER, signature)]
    )
    return f"{project.anonymous_url}?{query}"


class SignedLinkRefused(Exception):
    """``reason``: ``invalid`` (tampered, unsigned, another project's or a revoked secret),
    ``expired`` or ``malformed`` (a repeated or oversized parameter, no ``exp``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedParameters:
    params: dict[str, str]
    digest: str  # sha256 of the signature: the URL's single-use key
    expires_at: datetime


def signed_parameters_read(
    *, project: Project, query, now: datetime | None = None
) -> SignedParameters:
    """Check a signed URL's query (a QueryDict); raise ``SignedLinkRefused``."""
    now = now or timezone.now()
    pairs = [(k, v) for k in query for v in query.getlist(k)]
    names = [k for k, _ in pairs]
    signature = query.get(SIGNATURE_PARAMETER, "")
    signed = [(k, v) for k, v in pairs if k != SIGNATURE_PARAMETER]
    if len(set(names)) != len(names) or EXPIRY_PARAMETER not in names:
        raise SignedLinkRefused("malformed")
    if len(signed) > MAX_PARAMETERS + 1 or any(
        len(k) > MAX_NAME or len(v) > MAX_VALUE for k, v in signed
    ):
        raise SignedLinkRefused("malformed")
    if not signature or not any(
        hmac.compare_digest(sign(secret.secret, project.public_token, signed), signature)
        for secret in signing_secrets_accepted(project=project, now=now)
    ):
        raise SignedLinkRefused("invalid")
    try:
        expires_at = datetime.fromtimestamp(int(query[EXPIRY_PARAMETER]), tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise SignedLinkRefused("malformed") from exc
    if expires_at <= now:
        raise SignedLinkRefused("expired")
    return SignedParameters(
        params={k: v for k, v in signed if k != EXPIRY_PARAMETER},
        digest=hashlib.sha256(signature.encode()).hexdigest(),
        expires_at=expires_at,
    )


def signed_link_used(*, project: Project, digest: str) -> bool:
    return SignedLinkUse.objects.filter(project=project, digest=digest).exists()


# --- the session: where the parameters live once the URL is clean ----------------------------
def session_key(project: Project) -> str:
    return SESSION_PREFIX + project.public_token


def session_store(session, project: Project, signed: SignedParameters) -> None:
    session[session_key(project)] = {
        "params": signed.params,
        "digest": signed.digest,
        "exp": int(signed.expires_at.timestamp()),
    }


def session_read(session, project: Project) -> SignedParameters | None:
    stored = session.get(session_key(project))
    if not isinstance(stored, dict) or not stored.get("digest"):
        return None
    return SignedParameters(
        params=dict(stored.get("params") or {}),
        digest=str(stored["digest"]),
        expires_at=datetime.fromtimestamp(int(stored.get("exp") or 0), tz=UTC),
    )
