"""Pages: the public opt-out link, and the brand's opt-outs, audit trail and inbound replies."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from core.csvio import csv_rows
from optouts.models import Channel, InboundMessage, OptOut, Scope, Source
from optouts.selectors import (
    CSV_HEADER,
    inbound_list,
    optout_csv_rows,
    optout_events_for,
    optout_list,
)
from optouts.services import optout_create_by_admin, optout_opt_in

PAGE_SIZE = 50


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
