"""Pages of outbound webhooks: the endpoint list (with the form that registers one), and an
endpoint's page with its delivery log and actions. Every member reads; brand admins act."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views import View

from brands.roles import Role
from brands.rotation import grace_from_hours
from brands.views import BrandPageMixin
from webhooks.models import EventType, WebhookDelivery, WebhookEndpoint
from webhooks.services import (
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_rotate_secret,
    endpoint_update,
)

PAGE_SIZE = 50


def _errors(exc: ValidationError) -> dict:
    return (
        {k: " ".join(v) for k, v in exc.message_dict.items()}
        if hasattr(exc, "error_dict")
        else {"url": " ".join(exc.messages)}
    )


class EndpointListView(BrandPageMixin, View):
    read_role = Role.VIEWER
    write_role = Role.BRAND_ADMIN

    def get(self, request, *, form=None, errors=None, new_secret="", created=None, status=200):
        endpoints = self.scoped(WebhookEndpoint.objects.all())
        return render(
            request,
            "webhooks/list.html",
            {
                "endpoints": endpoints,
                "event_types": EventType.choices,
                "can_manage": self.can(Role.BRAND_ADMIN),
                "form": form or {"events": []},
                "errors": errors or {},
                "new_secret": new_secret,
                "created": created,
            },
            status=status,
        )

    def post(self, request):
        form = {
            "url": request.POST.get("url", ""),
            "description": request.POST.get("description", ""),
            "events": request.POST.getlist("events"),
        }
        try:
            issued = endpoint_create(brand=self.brand, actor=request.user, **form)
        except ValidationError as exc:
            return self.get(request, form=form, errors=_errors(exc), status=400)
        messages.success(
            request, "Endpoint added. Copy its signing secret now: it will not be shown again."
        )
        return self.get(request, new_secret=issued.secret, created=issued.endpoint)


class EndpointDetailView(BrandPageMixin, View):
    read_role = Role.VIEWER
    write_role = Role.BRAND_ADMIN

    def get(self, request, pk: int, *, new_secret="", errors=None, status=200):
        endpoint = self.get_scoped(WebhookEndpoint, pk=pk)
        deliveries = (
            WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .order_by("-pk")
        )
        state = request.GET.get("state", "")
        if state in WebhookDelivery.State.values:
            deliveries = deliveries.filter(state=state)
        page = Paginator(deliveries, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "webhooks/detail.html",
            {
                "endpoint": endpoint,
                "page": page,
                "state": state,
                "states": WebhookDelivery.State.choices,
                "event_types": EventType.choices,
                "can_manage": self.can(Role.BRAND_ADMIN),
                "new_secret": new_secret,
                "previous_secret_until": endpoint.previous_secret_until
                if len(endpoint.signing_secrets()) > 1
                else None,
                "errors": errors or {},
            },
            status=status,
        )

    def post(self, request, pk: int):
        endpoint = self.get_scoped(WebhookEndpoint, pk=pk)
        action = request.POST.get("action")
        if action == "redeliver":
            delivery = self.get_scoped(
                WebhookDelivery.objects.filter(endpoint=endpoint), pk=request.POST.get("delivery")
            )
            delivery_redeliver(delivery=delivery, actor=request.user)
            messages.success(request, f"Event {delivery.event.type} queued again.")
        elif action == "disable":
            endpoint_disable(endpoint=endpoint, reason="Disabled by an admin.", actor=request.user)
            messages.success(request, "Endpoint disabled: events are no longer sent to it.")
        elif action == "enable":
            endpoint_enable(endpoint=endpoint, actor=request.user)
            messages.success(request, "Endpoint enabled: waiting deliveries are sent now.")
        elif action == "rotate":
            try:
                secret = endpoint_rotate_secret(
                    endpoint=endpoint,
                    actor=request.user,
                    grace=grace_from_hours(request.POST.get("grace_hours")),
                )
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
                return redirect("webhook_endpoints:detail", pk=endpoint.pk)
            messages.success(
                request, "New signing secret. Copy it now: it will not be shown again."
            )
            return self.get(request, pk, new_secret=secret)
        elif action == "update":
            try:
                endpoint_update(
                    endpoint=endpoint,
                    url=request.POST.get("url", ""),
                    events=request.POST.getlist("events"),
                    description=request.POST.get("description", ""),
                    actor=request.user,
                )
            except ValidationError as exc:
                return self.get(request, pk, errors=_errors(exc), status=400)
            messages.success(request, "Endpoint saved.")
        elif action == "delete":
            endpoint_delete(endpoint=endpoint, actor=request.user)
            messages.success(request, f"Endpoint {endpoint.url} deleted.")
            return redirect("webhook_endpoints:list")
        return redirect("webhook_endpoints:detail", pk=endpoint.pk)
