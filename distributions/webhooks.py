"""Provider callbacks. Each is authenticated (Twilio's request signature) before it is read.

A forged or unsigned request answers 403 and changes nothing. A valid callback answers 204 at
once; the status is applied in the same request because applying it is one indexed UPDATE.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from twilio.request_validator import RequestValidator

from distributions.models import Message, ProviderAccount
from distributions.services import message_status_ingest

logger = logging.getLogger(__name__)


def twilio_auth_token_for_brand(brand_id: int) -> str:
    """The token Twilio signs this brand's callbacks with (its sub-account or own account)."""
    account = ProviderAccount.objects.filter(brand_id=brand_id, provider="twilio").first()
    if account and account.auth_token:
        return account.auth_token
    return settings.TWILIO_AUTH_TOKEN


def twilio_signature_valid(request, auth_token: str) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not auth_token:
        return False
    # Twilio signs the URL it was given, which we built from PUBLIC_BASE_URL.
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    return RequestValidator(auth_token).validate(url, request.POST.dict(), signature)


@csrf_exempt
@require_POST
def twilio_status_callback(request, message_id: int):
    message = (
        Message.objects.filter(pk=message_id)
        .select_related("distribution__project")
        .only("pk", "provider_id", "distribution__project__brand_id")
        .first()
    )
    if message is None:
        # Unknown id: answer like a bad signature, so ids cannot be probed.
        return HttpResponseForbidden("invalid signature")
    brand_id = message.distribution.project.brand_id
    if not twilio_signature_valid(request, twilio_auth_token_for_brand(brand_id)):
        logger.warning(
            "twilio status callback with an invalid signature for message %s", message_id
        )
        return HttpResponseForbidden("invalid signature")
    try:
        with transaction.atomic():  # the row, its event and what follows, or nothing
            message_status_ingest(
                message_id=message.pk,
                provider_id=request.POST.get("MessageSid", ""),
                provider_status=request.POST.get("MessageStatus")
                or request.POST.get("SmsStatus", ""),
                error_code=request.POST.get("ErrorCode", ""),
            )
    except IntegrityError:
        # The message (or its distribution) was deleted while its callback was in flight:
        # nothing is left to record, and a 5xx would only make the provider retry.
        logger.info("twilio status callback for message %s, deleted meanwhile", message_id)
    return HttpResponse(status=204)


BOUNCE_SIGNATURE_HEADER = "X-Relay-Signature"  # "sha256=<hex HMAC of the body>"
BOUNCE_TOKEN_HEADER = "X-Relay-Bounce-Token"  # noqa: S105 - a header name, not a secret
MAX_BOUNCE_BYTES = 2_000_000


def bounce_request_authentic(request, secret: str) -> bool:
    import hashlib
    import hmac

    if not secret:
        return False
    token = request.headers.get(BOUNCE_TOKEN_HEADER, "")
    if token:
        return hmac.compare_digest(token.encode(), secret.encode())
    signature = request.headers.get(BOUNCE_SIGNATURE_HEADER, "").removeprefix("sha256=")
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return bool(signature) and hmac.compare_digest(signature.lower(), expected)


@csrf_exempt
@require_POST
def email_bounce_inbound(request):
    """A raw MIME delivery status notification (RFC 3464) from the bounce mailbox's MTA,
    authenticated with ``RELAY_BOUNCE_SECRET``. Stored whatever it says; 202 when stored."""
    from django.http import JsonResponse

    from distributions.bounces import bounce_ingest

    if int(request.headers.get("Content-Length") or 0) > MAX_BOUNCE_BYTES:
        return HttpResponse("too large", status=413)
    if not bounce_request_authentic(request, settings.RELAY_BOUNCE_SECRET):
        logger.warning("bounce report with an invalid signature")
        return HttpResponseForbidden("invalid signature")
    report = bounce_ingest(raw=request.body)
    return JsonResponse({"id": report.pk, "action": report.action}, status=202)
