"""The public opt-out link, ``/o/<token>``: the signed token names one recipient row (the
rules of the link and of the opt-out it records: ``optouts.links``, ``optouts.services``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from distributions.models import Message
from optouts.links import (
    is_alphanumeric_sender,
    link_expired,
    link_expires_at,
    opt_out_token_read,
)
from optouts.models import OptOut, Scope
from optouts.services import optout_record_link


# --- the public opt-out link ------------------------------------------------------------------
def _masked(address: str) -> str:
    """``•••• 0100``: enough for the recipient to recognise their number, no more."""
    if "@" in address:
        name, _, domain = address.partition("@")
        return f"{name[:1]}•••@{domain}"
    return f"•••• {address[-4:]}" if len(address) > 4 else "••••"


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class OptOutLinkView(View):
    """``/o/<token>``: GET shows a confirmation (link previews and scanners only GET), POST
    opts out. CSRF protection is off on purpose: the unguessable token in the URL is the
    credential, and a request that knows it can opt out anyway; a CSRF failure page would only
    stop real recipients whose in-app browser drops cookies."""

    def _message(self, token: str):
        message_id = opt_out_token_read(token)
        if message_id is None:
            return None
        return (
            Message.objects.filter(pk=message_id)
            .exclude(address="")
            .select_related("distribution__project__brand", "person")
            .first()
        )

    def _render(self, request, template: str, message, status: int = 200, **extra):
        distribution = message.distribution if message else None
        context = {
            "brand": distribution.project.brand if distribution else None,
            "channel": distribution.channel if distribution else "",
            "address": _masked(message.address) if message else "",
            "alphanumeric": is_alphanumeric_sender(distribution.sender) if distribution else False,
            **extra,
        }
        response = render(request, template, context, status=status)
        response["Referrer-Policy"] = "no-referrer"  # the token must not leak to other sites
        response["X-Robots-Tag"] = "noindex, nofollow"
        return response

    def _state(self, request, token: str):
        message = self._message(token)
        if message is None:
            return message, self._render(request, "optouts/link_invalid.html", None, status=404)
        if link_expired(message=message):
            return message, self._render(
                request,
                "optouts/link_expired.html",
                message,
                status=410,
                expired_on=link_expires_at(message),
            )
        return message, None

    def get(self, request, token: str):
        message, response = self._state(request, token)
        if response is not None:
            return response
        distribution = message.distribution
        already = OptOut.objects.filter(
            brand_id=distribution.project.brand_id,
            channel=distribution.channel,
            address=message.address,
            active=True,
            scope=Scope.DIRECTORY,
        ).exists()
        template = "optouts/link_done.html" if already else "optouts/link_confirm.html"
        return self._render(
            request,
            template,
            message,
            already=already,
            expires_at=link_expires_at(message),
            action=request.path,
        )

    def post(self, request, token: str):
        message, response = self._state(request, token)
        if response is not None:
            return response
        try:
            _optout, changed = optout_record_link(message=message)
        except ValidationError:  # expired between the two checks
            return self._render(request, "optouts/link_expired.html", message, status=410)
        return self._render(request, "optouts/link_done.html", message, already=not changed)
