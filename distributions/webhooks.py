"""Provider callbacks. Each is authenticated (Twilio's request signature) before it is read.

A forged or unsigned request answers 403 and changes nothing. A valid callback answers 204 at
once; the status is applied in the same request because applying it is one indexed UPDATE.
"""

from __future__ import annotations

import logging

from django.conf import settings
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
    message_status_ingest(
        message_id=message.pk,
        provider_id=request.POST.get("MessageSid", ""),
        provider_status=request.POST.get("MessageStatus") or request.POST.get("SmsStatus", ""),
        error_code=request.POST.get("ErrorCode", ""),
    )
    return HttpResponse(status=204)
