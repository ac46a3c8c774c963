"""The inbound-SMS webhook: Twilio posts every reply a recipient sends to one of our numbers.

The request is authenticated before anything is read into the database: the brand is found
from the numbers (``optouts.selectors.inbound_brand_candidates``) and the request must carry
Twilio's signature made with that brand's auth token. A forged or unsigned request answers 403
and changes nothing; a replayed one (same ``MessageSid``) answers an empty TwiML and changes
nothing. The answer is TwiML: empty for STOP and START (Twilio's Advanced Opt-Out sends its
own confirmation), the brand's help text for HELP.
"""

from __future__ import annotations

import codecs
import logging
from xml.sax.saxutils import escape

from django.conf import settings
from django.core.exceptions import BadRequest
from django.http import HttpResponse, HttpResponseForbidden, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from twilio.request_validator import RequestValidator

from brands.models import Brand
from distributions.webhooks import twilio_auth_token_for_brand
from optouts.selectors import inbound_brand_candidates
from optouts.services import inbound_reply_handle

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 10  # signature checks per request, at most (each is one HMAC)


def twiml(reply: str = "") -> HttpResponse:
    body = f"<Message>{escape(reply)}</Message>" if reply else ""
    return HttpResponse(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        content_type="text/xml; charset=utf-8",
    )


def _form(request) -> QueryDict:
    """The posted fields. Twilio posts UTF-8; a body declared in another charset (which Django
    refuses) is decoded with that charset when Python knows it, else as UTF-8 with U+FFFD."""
    try:
        return request.POST
    except BadRequest:
        charset = request.encoding or "utf-8"
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return QueryDict(request.body, encoding=charset)


def _signature_valid(request, form: QueryDict, auth_token: str) -> bool:
    """Twilio's signature of the URL it was given (built from PUBLIC_BASE_URL) and the form."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not auth_token:
        return False
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    return RequestValidator(auth_token).validate(url, form.dict(), signature)


@csrf_exempt
@require_POST
def twilio_inbound(request):
    form = _form(request)

    def field(name: str) -> str:
        return (form.get(name) or "").strip()

    to_number = field("To")
    from_number = field("From")
    account_sid = field("AccountSid")
    service_sid = field("MessagingServiceSid")
    candidates = inbound_brand_candidates(
        to_number=to_number,
        from_number=from_number,
        account_sid=account_sid,
        messaging_service_sid=service_sid,
    )[:MAX_CANDIDATES]
    brand = None
    for brand_id in candidates:
        if _signature_valid(request, form, twilio_auth_token_for_brand(brand_id)):
            brand = Brand.objects.get(pk=brand_id)
            break
    else:
        # No brand of ours: a number of the platform account (stored, not acted on), or forged.
        if not _signature_valid(request, form, settings.TWILIO_AUTH_TOKEN):
            logger.warning("twilio inbound webhook with an invalid signature (To=%s)", to_number)
            return HttpResponseForbidden("invalid signature")
    result = inbound_reply_handle(
        brand=brand,
        from_number=from_number,
        to_number=to_number,
        body=form.get("Body", ""),
        provider="twilio",
        provider_sid=field("MessageSid") or field("SmsSid"),
        account_sid=account_sid,
        messaging_service_sid=service_sid,
        opt_out_type=field("OptOutType"),
    )
    return twiml(result.reply)
