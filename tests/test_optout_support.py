"""Shared helpers of the opt-out tests (no tests here): numbers, signed webhooks, sent messages."""

from __future__ import annotations

import itertools
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from twilio.request_validator import RequestValidator

from distributions.models import Distribution, Message, ProviderAccount
from participants.models import Participant
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

INBOUND_PATH = "/webhooks/twilio/inbound/"
PLATFORM_TOKEN = "platform" + "0" * 24
TOKEN_A = "alpha" + "a" * 27
TOKEN_B = "beta" + "b" * 28
SID_A = "AC" + "a1" * 16
SID_B = "AC" + "b2" * 16
SENDER_A = "+15005550006"
SENDER_B = "+15005550010"
SERVICE_B = "MG" + "b3" * 16
_sids = itertools.count(1)


def new_sid() -> str:
    return f"SM{next(_sids):032x}"


def configure_numbers(tenancy, settings):
    """Brand A sends from SENDER_A on its own Twilio account; brand B through a messaging
    service on another account. The platform account answers for numbers of no brand."""
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.TWILIO_AUTH_TOKEN = PLATFORM_TOKEN
    ProviderAccount.objects.create(
        brand=tenancy.brand_a,
        provider="twilio",
        account_sid=SID_A,
        auth_token=TOKEN_A,
        default_sender=SENDER_A,
    )
    ProviderAccount.objects.create(
        brand=tenancy.brand_b,
        provider="twilio",
        account_sid=SID_B,
        auth_token=TOKEN_B,
        default_sender=SENDER_B,
        messaging_service_sid=SERVICE_B,
    )
    return tenancy


def inbound_params(*, from_: str, to: str, body: str, sid: str | None = None, **extra) -> dict:
    """The form fields Twilio posts for an incoming SMS."""
    sid = sid or new_sid()
    params = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": SID_A if to == SENDER_A else extra.pop("AccountSid", SID_B),
        "From": from_,
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return params


def sign(params: dict, token: str, path: str = INBOUND_PATH) -> str:
    return RequestValidator(token).compute_signature(settings.PUBLIC_BASE_URL + path, params)


def post_inbound(client, params: dict, *, token: str, signature: str | None = None, **kwargs):
    """POST a webhook signed with ``token`` (or with ``signature`` as given)."""
    signature = sign(params, token) if signature is None else signature
    return client.post(INBOUND_PATH, params, HTTP_X_TWILIO_SIGNATURE=signature, **kwargs)


def post_raw(client, raw: bytes, params: dict, *, token: str, charset: str = "utf-8"):
    """POST a hand-encoded form body (other charsets, invalid bytes); ``params`` is what the
    server will decode, and what the signature covers."""
    return client.generic(
        "POST",
        INBOUND_PATH,
        raw,
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
        HTTP_X_TWILIO_SIGNATURE=sign(params, token),
    )


def encode_form(params: dict, encoding: str) -> bytes:
    return urlencode(params, encoding=encoding).encode("ascii")


def sent_message(
    project,
    phone: str,
    *,
    ago: timedelta = timedelta(hours=1),
    person=None,
    sender: str = "",
    channel: str = Distribution.Channel.SMS,
    distribution=None,
    status: str = Message.Status.DELIVERED,
) -> Message:
    """A message of ``project``'s brand handed to the provider ``ago`` before now."""
    if person is None:
        person = PersonFactory(brand=project.brand, phone=phone)
    participant = Participant.objects.filter(project=project, person=person).first()
    participant = participant or ParticipantFactory(project=project, person=person)
    distribution = distribution or DistributionFactory(
        project=project, status=Distribution.Status.SENT, sender=sender, channel=channel
    )
    at = timezone.now() - ago
    return Message.objects.create(
        distribution=distribution,
        participant=participant,
        person=person,
        address=phone if channel == Distribution.Channel.SMS else person.email,
        status=status,
        status_changed_at=at,
        sent_at=at,
        leased_at=at,
        provider_id=new_sid(),
        body="Hi",
    )


def self_service(brand):
    """The brand brings its own provider account: sends are not limited by Relay credits (the
    opt-out tests are about who is messaged, not about money)."""
    from brands.models import Brand

    Brand.objects.filter(pk=brand.pk).update(integration_model=Brand.IntegrationModel.SELF_SERVICE)
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    return brand
