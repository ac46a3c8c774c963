"""A provider that is not part of Relay, written as a new one would be: one module, one class,
and its line in ``settings.RELAY_SMS_PROVIDERS`` (tests/test_provider_registry.py adds it).

It speaks a made-up protocol, unlike Twilio's in every detail the engine must not assume:
its statuses (``ok``/``bounced``), its error code for a recipient who unsubscribed
(``E-STOP``), its signature (an HMAC of the body in ``X-Echo-Signature``), its inbound format
and its answer (JSON). What it "sends" is kept in ``EchoProvider.sent``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from itertools import count
from urllib.parse import urlencode

from django.http import JsonResponse

from distributions.models import ProviderAccount
from distributions.providers.base import (
    InboundSms,
    Outcome,
    OutgoingSms,
    SendResult,
    SmsProvider,
    StatusUpdate,
)

SIGNATURE_HEADER = "X-Echo-Signature"


def echo_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EchoProvider(SmsProvider):
    code = "echo"
    label = "Echo (tests)"
    wants_status_callback = True
    STATUS_MAP = {"ok": "delivered", "bounced": "failed", "queued": "sent"}
    BLOCKING_ERRORS = frozenset({"E-STOP", "E-CARRIER"})
    OPT_OUT_ERRORS = frozenset({"E-STOP"})

    sent: list[OutgoingSms] = []
    _ids = count(1)

    def send_window(self, messages: list[OutgoingSms]) -> list[SendResult]:
        results = []
        for message in messages:
            type(self).sent.append(message)
            results.append(
                SendResult(message.message_id, Outcome.ACCEPTED, provider_id=f"E{next(self._ids)}")
            )
        return results

    def find_sent(self, *, to: str, sender: str, since: datetime, body: str, **_) -> str | None:
        return None

    def check_credentials(self) -> None:
        return None

    @classmethod
    def callback_secret(cls, account: ProviderAccount | None) -> str:
        return account.auth_token if account is not None else ""

    @classmethod
    def request_authentic(cls, request, form, *, secret: str) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER, "")
        return bool(secret and signature) and hmac.compare_digest(
            signature, echo_signature(secret, request.body)
        )

    @classmethod
    def read_status_callback(cls, form, *, message_id: int) -> StatusUpdate:
        return cls.status_update(
            provider_status=form.get("state", ""),
            provider_id=form.get("ref", ""),
            error_code=form.get("problem", ""),
            message_id=message_id,
        )

    @classmethod
    def read_inbound(cls, form) -> InboundSms:
        return InboundSms(
            from_number=form.get("msisdn", ""),
            to_number=form.get("shortcode", ""),
            body=form.get("text", ""),
            provider_sid=form.get("ref", ""),
        )

    @classmethod
    def inbound_response(cls, reply: str) -> JsonResponse:
        return JsonResponse({"reply": reply or None})

    @classmethod
    def inbound_brand_candidates(cls, inbound: InboundSms) -> list[int]:
        return list(
            ProviderAccount.objects.filter(
                provider=cls.code, default_sender=inbound.to_number
            ).values_list("brand_id", flat=True)
        )


def echo_body(fields: dict) -> bytes:
    """A form body as the echo provider posts it."""
    return urlencode(fields).encode()
