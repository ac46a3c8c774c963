"""Provider callbacks: delivery statuses and inbound messages, for any provider class of the
registry (the URL names it: ``webhooks/<code>/status/<message id>/``,
``webhooks/<code>/inbound/``), and bounce reports from the bounce mailbox.

Each request is authenticated by its provider class (``request_authentic``) before anything is
written. A forged or unsigned request answers 403 and changes nothing; so does a status for an
unknown message (ids cannot be probed). A valid status answers 204 at once: applying it is one
indexed UPDATE. An inbound message is matched to a brand by the provider's candidates, the
first whose secret authenticates the request; a replayed one changes nothing.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import logging

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied
from django.db import IntegrityError, transaction
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from brands.models import Brand
from distributions.bounces import bounce_ingest
from distributions.inbound import sms_reply_receive
from distributions.models import Message, ProviderAccount
from distributions.providers.base import Provider
from distributions.providers.registry import provider_classes
from distributions.selectors import inbound_accounts_expire, recent_messages_to
from distributions.services import status_update_apply

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 10  # signature checks per inbound request, at most (each is one HMAC)


def _provider_class(code: str) -> type[Provider]:
    try:
        return provider_classes()[code]
    except KeyError:
        raise Http404("no such provider") from None


def _form(request) -> QueryDict:
    """The posted fields. Providers post UTF-8; a body declared in another charset (which
    Django refuses) is decoded with that charset when Python knows it, else as UTF-8 with
    U+FFFD."""
    try:
        return request.POST
    except BadRequest:
        charset = request.encoding or "utf-8"
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return QueryDict(request.body, encoding=charset)


def _account(brand_id: int, code: str) -> ProviderAccount | None:
    return ProviderAccount.objects.filter(brand_id=brand_id, provider=code).first()


@csrf_exempt
@require_POST
def status_callback(request, code: str, message_id: int):
    provider = _provider_class(code)
    message = (
        Message.objects.filter(pk=message_id)
        .select_related("distribution__project")
        .only("pk", "provider_id", "distribution__project__brand_id")
        .first()
    )
    if message is None:
        # Unknown id: answer like a bad signature, so ids cannot be probed.
        return HttpResponseForbidden("invalid signature")
    form = _form(request)
    secret = provider.callback_secret(_account(message.distribution.project.brand_id, code))
    if not provider.request_authentic(request, form, secret=secret):
        logger.warning(
            "%s status callback with an invalid signature for message %s", code, message_id
        )
        return HttpResponseForbidden("invalid signature")
    update = provider.read_status_callback(form, message_id=message.pk)
    if update is None:
        raise Http404("this provider sends no status callbacks")
    try:
        with transaction.atomic():  # the row, its event and what follows, or nothing
            status_update_apply(update=update)
    except IntegrityError:
        # The message (or its distribution) was deleted while its callback was in flight:
        # nothing is left to record, and a 5xx would only make the provider retry.
        logger.info("%s status callback for message %s, deleted meanwhile", code, message_id)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def inbound_callback(request, code: str):
    """A message a recipient sent to one of our numbers: stored (STOP and START acted on,
    HELP answered) by ``distributions.inbound``, whose conversation step a worker applies
    moments later; the answer is the provider's (Twilio: TwiML)."""
    provider = _provider_class(code)
    form = _form(request)
    inbound = provider.read_inbound(form)
    if inbound is None:
        raise Http404("this provider sends no inbound messages")
    brand = _only_authentic_brand(request, provider, code, form, inbound)
    recent = None
    if brand is None:
        recent = recent_messages_to(address=inbound.from_number) if inbound.from_number else None
        try:
            try:
                brand = _first_authentic_brand(request, provider, code, form, inbound, recent)
            except PermissionDenied:
                # The accounts this process kept may be older than a token rotated elsewhere
                # (``inbound_accounts``): checked again before the request is refused.
                if not inbound_accounts_expire():
                    raise
                brand = _only_authentic_brand(
                    request, provider, code, form, inbound
                ) or _first_authentic_brand(request, provider, code, form, inbound, recent)
        except PermissionDenied:
            logger.warning(
                "%s inbound callback with an invalid signature (To=%s)", code, inbound.to_number
            )
            return HttpResponseForbidden("invalid signature")
    result = sms_reply_receive(brand=brand, inbound=inbound, provider=code, recent=recent)
    return provider.inbound_response(result.reply)


def _secret(provider: type[Provider], code: str, account: ProviderAccount | None) -> str:
    """The secret a candidate brand's requests are signed with: its account of this
    provider's, else (None) the platform's."""
    return provider.callback_secret(account if account and account.provider == code else None)


def _only_authentic_brand(request, provider, code: str, form, inbound) -> Brand | None:
    """The brand, when the provider's candidates found without the sender's history (the
    accounts of the numbers involved: one read) hold exactly one whose secret authenticates
    the request: the candidates with history are the same brands in another order, plus the
    brands that last messaged the sender *after* them, so that brand comes first whatever the
    history says. None: ask ``_first_authentic_brand`` (several authenticate, as on a shared
    number; none does; or the provider needs more than it read)."""
    found: dict[int, ProviderAccount] = {}
    candidates = provider.inbound_brand_candidates_among(
        inbound, recent_brand_ids=[], accounts=found
    )
    if (
        not candidates
        or len(candidates) > MAX_CANDIDATES
        or any(b not in found for b in candidates)
    ):
        return None
    authentic = [
        brand_id
        for brand_id in candidates
        if provider.request_authentic(
            request, form, secret=_secret(provider, code, found[brand_id])
        )
    ]
    if len(authentic) != 1:
        return None
    account = found[authentic[0]]
    return account.brand  # read with its account, which it keeps (brand_provider_account)


def _first_authentic_brand(request, provider, code: str, form, inbound, recent) -> Brand | None:
    """The first of the provider's candidates (ordered by the sender's history, ``recent``)
    whose secret authenticates the request; None for a request signed with the platform's
    secret (a number of the platform account: stored, not acted on). Raises PermissionDenied
    when nothing authenticates it."""
    found: dict[int, ProviderAccount] = {}
    candidates = provider.inbound_brand_candidates_among(
        inbound, recent_brand_ids=recent.brand_ids if recent else [], accounts=found
    )[:MAX_CANDIDATES]
    # The candidates' accounts of this provider, with their brands (which keep them): those
    # the provider read on the way, the others in one query.
    accounts = {b: a for b, a in found.items() if b in candidates and a.provider == code}
    missing = [b for b in candidates if b not in found]
    if missing:
        accounts.update(
            (account.brand_id, account)
            for account in ProviderAccount.objects.filter(
                brand_id__in=missing, provider=code
            ).select_related("brand")
        )
    for brand_id in candidates:
        account = accounts.get(brand_id)
        if provider.request_authentic(request, form, secret=provider.callback_secret(account)):
            return account.brand if account else Brand.objects.get(pk=brand_id)
    # No brand of ours: a number of the platform account (stored, not acted on), or forged.
    if not provider.request_authentic(request, form, secret=provider.callback_secret(None)):
        raise PermissionDenied("invalid signature")
    return None


BOUNCE_SIGNATURE_HEADER = "X-Relay-Signature"  # "sha256=<hex HMAC of the body>"
BOUNCE_TOKEN_HEADER = "X-Relay-Bounce-Token"  # noqa: S105 - a header name, not a secret
MAX_BOUNCE_BYTES = 2_000_000


def bounce_request_authentic(request, secret: str) -> bool:
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
    if int(request.headers.get("Content-Length") or 0) > MAX_BOUNCE_BYTES:
        return HttpResponse("too large", status=413)
    if not bounce_request_authentic(request, settings.RELAY_BOUNCE_SECRET):
        logger.warning("bounce report with an invalid signature")
        return HttpResponseForbidden("invalid signature")
    report = bounce_ingest(raw=request.body)
    return JsonResponse({"id": report.pk, "action": report.action}, status=202)
