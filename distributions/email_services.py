"""Writes and rules for the email channel: content checks, From domains, the weekly limit, the
brand's email settings (SMTP relay, verified domains, DKIM keys).

What callers can rely on:
- an email distribution is refused at scheduling (``ValidationError`` naming the field) when
  its body has no survey link (invites and reminders), no opt-out link, a From address outside
  the brand's verified domains and the platform's, or would exceed the brand's weekly limit
  (docs/email.md, "Refused at scheduling"); the limit is checked again when it starts;
- secrets (SMTP password, DKIM private key) are encrypted at rest and only shown redacted;
- the weekly limit is the platform operator's (Django admin), never a brand admin's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand
from credits.models import ZERO
from credits.segments import normalize_line_breaks
from distributions.audiences import recipients_queryset
from distributions.conditions import conditions_clean
from distributions.email_content import render_email, sanitize_html
from distributions.models import Distribution, EmailAccount, EmailDomain, Message
from participants.models import Participant
from participants.rendering import piped_fields, recipient_values
from projects.models import Project

WEEK = timedelta(days=7)
WEEKLY_LIMIT_MESSAGE = (
    "Your email distribution cannot be sent at this time. You are currently allowed to send "
    "{limit} emails per week. Please contact your account representative to increase this "
    "limit."
)
NO_SURVEY_LINK_MESSAGE = (
    "The email has no survey link: include ${link} so that recipients can take the survey."
)
NO_OPT_OUT_LINK_MESSAGE = (
    "The email has no opt-out link: include ${opt_out_link} so that recipients can unsubscribe."
)
FROM_DOMAIN_MESSAGE = (
    "The From address must use one of your verified domains or the platform's ({allowed}): "
    "{domain} is not verified for this brand (the SPF check would fail)."
)
MAX_EMAIL_LENGTH = 200_000
MAX_SUBJECT_LENGTH = 300
SMTP_SETTINGS = ("smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password")
ACCOUNT_FIELDS = (
    "transport",
    *SMTP_SETTINGS,
    "default_from_name",
    "default_from_address",
    "default_reply_to",
    "messages_per_second",
)


# --- reads used by the rules ---------------------------------------------------------------
def email_account_for(brand: Brand) -> EmailAccount:
    """The brand's email settings (an unsaved platform-mailer default when it has none)."""
    account = EmailAccount.objects.filter(brand=brand).first()
    return account or EmailAccount(brand=brand)


def platform_from_address() -> str:
    from email.utils import parseaddr

    return parseaddr(settings.DEFAULT_FROM_EMAIL)[1]


def platform_domains() -> list[str]:
    domains = [d.strip().lower() for d in settings.RELAY_EMAIL_PLATFORM_DOMAINS if d.strip()]
    own = platform_from_address().rpartition("@")[2].lower()
    return domains or ([own] if own else [])


def domain_of(address: str) -> str:
    return (address or "").rpartition("@")[2].strip().lower()


def verified_domain_for(*, brand_id: int, address: str) -> EmailDomain | None:
    return (
        EmailDomain.objects.filter(
            brand_id=brand_id, domain=domain_of(address), verified_at__isnull=False
        )
        .order_by("pk")
        .first()
    )


def weekly_limit_for(brand: Brand) -> int:
    limit = EmailAccount.objects.filter(brand=brand).values_list("weekly_limit", flat=True).first()
    return settings.RELAY_EMAIL_WEEKLY_LIMIT if limit is None else limit


def emails_sent_since(*, brand_id: int, since: datetime, exclude_id: int | None = None) -> int:
    """Emails handed to the mailer since ``since`` (every email distribution of the brand)."""
    queryset = Message.objects.filter(
        distribution__project__brand_id=brand_id,
        distribution__channel=Distribution.Channel.EMAIL,
        status__in=Message.HANDED_OVER,
        sent_at__gte=since,
    )
    if exclude_id:
        queryset = queryset.exclude(distribution_id=exclude_id)
    return queryset.count()


def weekly_limit_error(*, brand: Brand, wanted: int, exclude_id: int | None = None) -> str:
    """The message (docs/email.md, "Limits") when ``wanted`` more emails would pass the brand's
    weekly limit."""
    limit = weekly_limit_for(brand)
    if wanted <= 0:
        return ""
    used = emails_sent_since(brand_id=brand.pk, since=timezone.now() - WEEK, exclude_id=exclude_id)
    return WEEKLY_LIMIT_MESSAGE.format(limit=limit) if used + wanted > limit else ""


# --- distribution content and rules ---------------------------------------------------------
def email_fields_clean(
    *,
    brand: Brand,
    message: str,
    subject: str = "",
    text_body: str = "",
    from_name: str = "",
    from_address: str = "",
    reply_to: str = "",
) -> tuple[str, dict]:
    """The sanitised HTML body and the email fields, defaults filled in (brand, platform)."""
    account = email_account_for(brand)
    from_address = (from_address or "").strip() or account.default_from_address
    from_address = from_address or platform_from_address()
    fields = {
        "subject": " ".join((subject or "").split()),
        "text_body": normalize_line_breaks(text_body or "").strip(),
        "from_name": " ".join((from_name or "").split()) or account.default_from_name,
        "from_address": from_address.lower(),
        "reply_to": (reply_to or "").strip().lower() or account.default_reply_to,
    }
    return sanitize_html(normalize_line_breaks(message or "")).strip(), fields


def email_content_errors(
    *,
    kind: str,
    message: str,
    trigger: str = "",
    subject: str = "",
    text_body: str = "",
    from_name: str = "",
    from_address: str = "",
    reply_to: str = "",
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not subject:
        errors["subject"] = "The email has no subject."
    elif len(subject) > MAX_SUBJECT_LENGTH:
        errors["subject"] = f"The subject is longer than {MAX_SUBJECT_LENGTH} characters."
    if len(message) > MAX_EMAIL_LENGTH or len(text_body) > MAX_EMAIL_LENGTH:
        errors["message"] = f"The email is longer than {MAX_EMAIL_LENGTH} characters."
    parts = [("message", message)] + ([("text_body", text_body)] if text_body else [])
    for field, body in parts:
        fields = set(piped_fields(body))
        if kind in (Distribution.Kind.INVITE, Distribution.Kind.REMINDER) and "link" not in fields:
            errors.setdefault(field, NO_SURVEY_LINK_MESSAGE)
        if "opt_out_link" not in fields:
            errors.setdefault(field, NO_OPT_OUT_LINK_MESSAGE)
    for field, value in (("from_address", from_address), ("reply_to", reply_to)):
        if value:
            try:
                validate_email(value)
            except ValidationError:
                errors[field] = f"'{value}' is not a valid email address."
    if trigger and (trigger != Distribution.TRIGGER_COMPLETION or kind != "thank_you"):
        errors["trigger"] = (
            "Only a thank-you email can be sent when a recipient completes the survey."
        )
    return errors


def email_sending_errors(
    *,
    project: Project,
    kind: str,
    parent,
    conditions: list,
    trigger: str,
    from_address: str,
    exclude_id: int | None = None,
) -> dict[str, str]:
    """The From domain and the weekly limit (with this distribution's recipients counted)."""
    errors = from_domain_errors(project=project, from_address=from_address)
    if trigger != Distribution.TRIGGER_COMPLETION:
        wanted = email_recipient_estimate(
            project=project, kind=kind, parent=parent, conditions=conditions
        )
        if message := weekly_limit_error(brand=project.brand, wanted=wanted, exclude_id=exclude_id):
            errors["message"] = message
    return errors


def from_domain_errors(*, project: Project, from_address: str) -> dict[str, str]:
    """``from_address`` must be on a platform domain or a verified domain of the brand."""
    domain = domain_of(from_address)
    allowed = platform_domains()
    if domain in allowed or verified_domain_for(brand_id=project.brand_id, address=from_address):
        return {}
    return {
        "from_address": FROM_DOMAIN_MESSAGE.format(
            allowed=", ".join(allowed) or "none", domain=domain or "(none)"
        )
    }


def email_recipient_estimate(*, project: Project, kind: str, parent, conditions: list) -> int:
    """How many distinct addresses the distribution would email now."""

    probe = Distribution(
        project=project, kind=kind, parent=parent, conditions=conditions, channel="email"
    )
    return (
        recipients_queryset(probe)
        .exclude(Q(person__email="") | Q(person__email__isnull=True))
        .values("person__email")
        .distinct()
        .count()
    )


def email_estimate(*, project, kind: str, parent, conditions: list | None) -> dict:
    """``distributions.charging.credits_estimate``'s answer for an email distribution: its
    recipients now, and no credits (emails are limited per week, not billed in credits)."""

    recipients = email_recipient_estimate(
        project=project, kind=kind, parent=parent, conditions=conditions_clean(conditions)
    )
    return {
        "recipients": recipients,
        "segments": 0,
        "segments_per_message": 0,
        "credits": ZERO,
        "available": None,
        "covered": True,
        "shortfall": ZERO,
        "skipped": 0,
        "by_country": [],
        "self_service": False,
    }


# --- the brand's settings -------------------------------------------------------------------
def email_account_update(*, brand: Brand, actor=None, **changes) -> EmailAccount:
    """Set the brand's email settings. An empty ``smtp_password`` keeps the stored one."""
    unknown = set(changes) - set(ACCOUNT_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
    account = email_account_for(brand)
    if changes.get("smtp_password") == "":
        changes.pop("smtp_password")
    for name, value in changes.items():
        setattr(account, name, value.strip() if isinstance(value, str) else value)
    errors: dict[str, str] = {}
    if account.transport not in EmailAccount.Transport.values:
        errors["transport"] = f"Unknown transport '{account.transport}'."
    if account.transport == EmailAccount.Transport.SMTP:
        if not account.smtp_host:
            errors["smtp_host"] = "Give the host name of your SMTP relay."
        if not 0 < (account.smtp_port or 0) < 65536:
            errors["smtp_port"] = "A port is a number from 1 to 65535."
        if account.smtp_security not in EmailAccount.Security.values:
            errors["smtp_security"] = f"Unknown security '{account.smtp_security}'."
        if account.smtp_username and not account.smtp_password:
            errors["smtp_password"] = "Give the password of that user."  # noqa: S105
    for field in ("default_from_address", "default_reply_to"):
        value = getattr(account, field)
        if value:
            try:
                validate_email(value)
            except ValidationError:
                errors[field] = f"'{value}' is not a valid email address."
    if account.default_from_address and not errors.get("default_from_address"):
        domain = domain_of(account.default_from_address)
        if domain not in platform_domains() and not verified_domain_for(
            brand_id=brand.pk, address=account.default_from_address
        ):
            errors["default_from_address"] = FROM_DOMAIN_MESSAGE.format(
                allowed=", ".join(platform_domains()), domain=domain
            )
    if errors:
        raise ValidationError(errors)
    account.save()
    return account


def email_domain_create(
    *, brand: Brand, domain: str, dkim_selector: str = "", dkim_private_key: str = "", actor=None
) -> EmailDomain:
    """Add a From domain (unverified until the platform operator or a DNS check verifies it)."""
    domain = (domain or "").strip().lower().rstrip(".")
    errors = _dkim_errors(dkim_selector, dkim_private_key)
    labels = domain.split(".")
    if len(labels) < 2 or not all(
        label and len(label) < 64 and label.replace("-", "").isalnum() for label in labels
    ):
        errors["domain"] = f"'{domain}' is not a domain name."
    elif EmailDomain.objects.filter(brand=brand, domain=domain).exists():
        errors["domain"] = f"{domain} is already one of your domains."
    if errors:
        raise ValidationError(errors)
    return EmailDomain.objects.create(
        brand=brand,
        domain=domain,
        dkim_selector=(dkim_selector or "").strip(),
        dkim_private_key=(dkim_private_key or "").strip(),
    )


def email_domain_update(
    *, domain: EmailDomain, dkim_selector=None, dkim_private_key=None, actor=None
) -> EmailDomain:
    selector = domain.dkim_selector if dkim_selector is None else dkim_selector.strip()
    key = domain.dkim_private_key if not dkim_private_key else dkim_private_key.strip()
    errors = _dkim_errors(selector, key)
    if errors:
        raise ValidationError(errors)
    domain.dkim_selector, domain.dkim_private_key = selector, key
    domain.save(update_fields=["dkim_selector", "dkim_private_key"])
    return domain


def email_domain_verify(*, domain: EmailDomain, actor=None) -> EmailDomain:
    """Mark a domain verified (the platform operator, after checking its DNS records)."""
    if domain.verified_at is None:
        domain.verified_at = timezone.now()
        domain.save(update_fields=["verified_at"])
    return domain


def _dkim_errors(selector: str, key: str) -> dict[str, str]:
    selector, key = (selector or "").strip(), (key or "").strip()
    errors: dict[str, str] = {}
    if bool(selector) != bool(key):
        errors["dkim_selector" if not selector else "dkim_private_key"] = (
            "DKIM needs both a selector and a private key."
        )
    if selector and not all(part.replace("-", "").isalnum() for part in selector.split(".")):
        errors["dkim_selector"] = f"'{selector}' is not a DKIM selector."
    if key:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            load_pem_private_key(key.encode(), password=None)
        except (ValueError, TypeError):
            errors["dkim_private_key"] = "The DKIM key is not an unencrypted PEM private key."
    return errors


def email_preview(
    *,
    project: Project,
    message: str,
    subject: str = "",
    text_body: str = "",
    participant: Participant | None = None,
):
    """What one recipient would receive (``participant``: the project's first by default),
    with sample links. The HTML is sanitised here too: a preview never runs a script."""

    if participant is None:
        participant = (
            Participant.objects.filter(project=project).select_related("person").order_by("pk")
        ).first()
    base = settings.PUBLIC_BASE_URL
    values, metadata = recipient_values(
        person=participant.person if participant else None,
        participant=participant,
        link=f"{base}/s/PREVIEW",
        opt_out_link=f"{base}/o/PREVIEW",
    )
    return render_email(
        subject=" ".join((subject or "").split()),
        html_body=sanitize_html(message or ""),
        text_body=(text_body or "").strip(),
        values=values,
        metadata=metadata,
    )
