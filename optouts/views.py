"""Pages: the public opt-out link, and the brand's opt-outs, audit trail and inbound replies."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from brands.roles import Role
from brands.views import BrandPageMixin
from core.csvio import csv_rows
from optouts.links import link_expired, link_expires_at, opt_out_token_read
from optouts.models import Channel, InboundMessage, OptOut, Scope, Source
from optouts.selectors import (
    CSV_HEADER,
    inbound_list,
    optout_csv_rows,
    optout_events_for,
    optout_list,
)
from optouts.services import optout_create_by_admin, optout_opt_in, optout_record_link

PAGE_SIZE = 50


# --- the public opt-out link ------------------------------------------------------------------
def _masked(address: str) -> str:
    """``•••• 0100``: enough for the recipient to recognise their number, no more."""
    if "@" in address:
        name, _, domain = address.partition("@")
        return f"{name[:1]}•••@{domain}"
    return f"•••• {address[-4:]}" if len(address) > 4 else "••••"


def _is_alphanumeric(sender: str) -> bool:
    return bool(sender) and any(ch.isalpha() for ch in sender) and not sender.startswith("MG")


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class OptOutLinkView(View):
    """``/o/<token>``: GET shows a confirmation (link previews and scanners only GET), POST
    opts out. CSRF protection is off on purpose: the unguessable token in the URL is the
    credential, and a request that knows it can opt out anyway; a CSRF failure page would only
    stop real recipients whose in-app browser drops cookies."""

    def _message(self, token: str):
        from distributions.models import Message

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
            "alphanumeric": _is_alphanumeric(distribution.sender) if distribution else False,
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


# --- brand pages ------------------------------------------------------------------------------
STATES = ("active", "opted_in", "all")


def _choice(request, name: str, allowed, default: str = "") -> str:
    """A filter value from the query string, or ``default`` when it is not one of ``allowed``."""
    value = request.GET.get(name, "")
    return value if value in allowed else default


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}):
        return target
    return fallback


class OptOutListView(BrandPageMixin, View):
    """The brand's opt-outs: search, filters, CSV export (``?export=csv``)."""

    def get(self, request):
        filters = {
            "q": request.GET.get("q", "").strip(),
            "source": _choice(request, "source", Source.values),
            "scope": _choice(request, "scope", Scope.values),
            "channel": _choice(request, "channel", Channel.values),
            "state": _choice(request, "state", STATES, default="active"),
        }
        queryset = optout_list(brand=self.brand, **filters)
        if request.GET.get("export") == "csv":
            rows = optout_csv_rows(queryset=queryset, zone=self.brand.zone)
            response = StreamingHttpResponse(
                csv_rows(CSV_HEADER, rows), content_type="text/csv; charset=utf-8"
            )
            stamp = timezone.now().astimezone(self.brand.zone).strftime("%Y%m%d-%H%M")
            response["Content-Disposition"] = (
                f'attachment; filename="opt-outs-{self.brand.slug}-{stamp}.csv"'
            )
            return response
        page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "optouts/list.html",
            {
                "page": page,
                "filters": filters,
                "sources": Source.choices,
                "scopes": Scope.choices,
                "channels": Channel.choices,
                "can_add": self.can(Role.PROJECT_ADMIN),
                "export_query": request.GET.urlencode(),
            },
        )


class OptOutCreateView(BrandPageMixin, View):
    """An admin records an opt-out the person asked for another way."""

    read_role = Role.PROJECT_ADMIN
    write_role = Role.PROJECT_ADMIN

    def post(self, request):
        try:
            optout = optout_create_by_admin(
                brand=self.brand,
                channel=request.POST.get("channel") or Channel.SMS,
                address=request.POST.get("address", ""),
                reason=request.POST.get("reason", ""),
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("optouts:list")
        messages.success(request, f"{optout.address} is opted out.")
        return redirect("optouts:detail", pk=optout.pk)


class OptOutDetailView(BrandPageMixin, View):
    def get(self, request, pk):
        optout = self.get_scoped(OptOut.objects.select_related("person"), pk=pk)
        return render(
            request,
            "optouts/detail.html",
            {
                "optout": optout,
                "events": optout_events_for(
                    brand=self.brand, channel=optout.channel, address=optout.address
                ),
                "can_opt_in": self.can(Role.BRAND_ADMIN) and optout.active,
            },
        )


class OptOutOptInView(BrandPageMixin, View):
    """POST: a brand admin opts the person back in, with a reason."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def post(self, request, pk):
        optout = self.get_scoped(OptOut, pk=pk)
        target = _safe_next(request, reverse("optouts:detail", args=[optout.pk]))
        try:
            optout_opt_in(
                optout=optout,
                reason=request.POST.get("reason", ""),
                role=self.role,
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return HttpResponseRedirect(target)
        messages.success(request, f"{optout.address} is opted back in.")
        return HttpResponseRedirect(target)


class InboundListView(BrandPageMixin, View):
    """Every reply the brand received, with what was done about it."""

    def get(self, request):
        kinds = [k for k, _ in InboundMessage._meta.get_field("kind").choices]
        filters = {
            "q": request.GET.get("q", "").strip(),
            "kind": _choice(request, "kind", kinds),
            "action": _choice(request, "action", InboundMessage.Action.values),
        }
        page = Paginator(inbound_list(brand=self.brand, **filters), PAGE_SIZE).get_page(
            request.GET.get("page")
        )
        return render(
            request,
            "optouts/inbound_list.html",
            {
                "page": page,
                "filters": filters,
                "kinds": InboundMessage._meta.get_field("kind").choices,
                "actions": InboundMessage.Action.choices,
            },
        )
