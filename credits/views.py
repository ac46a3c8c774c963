"""Pages: the licence usage report (with its CSV export and the grant form) and the ledger.

Brand admins only (docs/credits.md, "The licence usage report"). Everything is read through
``credits.selectors`` for the current brand."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from core.csvio import csv_rows
from credits.models import CreditEntry
from credits.selectors import (
    CSV_HEADER,
    credits_balance,
    ledger_list,
    usage_csv_rows,
    usage_period,
    usage_report,
)
from credits.services import credits_grant

Kind = CreditEntry.Kind
LEDGER_PAGE_SIZE = 50
# The ledger page shows money movements by default; per-message debits are a filter away.
DEFAULT_LEDGER_KINDS = [Kind.GRANT, Kind.PURCHASE, Kind.ADJUST, Kind.RESERVE, Kind.RELEASE]


class CreditsPageMixin(BrandPageMixin):
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def presets(self) -> list[tuple[str, str, str]]:
        """(label, start, end) of the period picker's shortcuts, in the brand's days."""
        today = timezone.now().astimezone(self.brand.zone).date()
        month_start = today.replace(day=1)
        last_month_end = month_start - timedelta(days=1)
        return [
            ("This month", month_start.isoformat(), today.isoformat()),
            (
                "Last month",
                last_month_end.replace(day=1).isoformat(),
                last_month_end.isoformat(),
            ),
            ("Last 30 days", (today - timedelta(days=29)).isoformat(), today.isoformat()),
            ("This year", today.replace(month=1, day=1).isoformat(), today.isoformat()),
        ]


class UsageReportView(CreditsPageMixin, View):
    """Credits consumed over a chosen period and remaining, by day, project and country."""

    def get(self, request):
        return self.render_page(request)

    def render_page(self, request, *, grant_errors=None, grant_values=None, status=200):
        period_errors = {}
        try:
            start, end = usage_period(
                brand=self.brand, start=request.GET.get("start"), end=request.GET.get("end")
            )
        except ValidationError as exc:
            period_errors = exc.message_dict
            start, end = usage_period(brand=self.brand, start=None, end=None)
            status = 400 if status == 200 else status
        report = usage_report(brand=self.brand, start=start, end=end)
        chart = {
            "labels": [day["date"].isoformat() for day in report["by_day"]],
            "credits": [float(day["credits"]) for day in report["by_day"]],
            "segments": [day["segments"] for day in report["by_day"]],
        }
        return render(
            request,
            "credits/usage.html",
            {
                "report": report,
                "chart": chart,
                "period_errors": period_errors,
                "presets": self.presets(),
                "grant_errors": grant_errors or {},
                "grant_values": grant_values or {},
                "grant_kinds": [(Kind.PURCHASE, "Purchase"), (Kind.GRANT, "Grant")],
                "recent": ledger_list(brand=self.brand, kinds=DEFAULT_LEDGER_KINDS)[:10],
            },
            status=status,
        )

    def post(self, request):
        """Add credits (a purchase or a grant), then back to the report."""
        values = {
            "amount": (request.POST.get("amount") or "").strip(),
            "kind": request.POST.get("kind") or Kind.PURCHASE,
            "note": (request.POST.get("note") or "").strip(),
        }
        try:
            entry = credits_grant(
                brand=self.brand,
                amount=values["amount"],
                kind=values["kind"],
                actor=request.user,
                note=values["note"],
                idempotency_key=request.POST.get("idempotency_key", ""),
            )
        except ValidationError as exc:
            return self.render_page(
                request, grant_errors=exc.message_dict, grant_values=values, status=400
            )
        messages.success(
            request,
            f"{entry.amount.normalize():f} credits added. Available now: "
            f"{credits_balance(brand=self.brand).available.normalize():f}.",
        )
        return redirect(request.get_full_path())


class UsageCsvView(CreditsPageMixin, View):
    """The period's consumption, one row per day, project and country (formula-safe)."""

    def get(self, request):
        try:
            start, end = usage_period(
                brand=self.brand, start=request.GET.get("start"), end=request.GET.get("end")
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("credits:usage")
        rows = usage_csv_rows(brand=self.brand, start=start, end=end)
        response = StreamingHttpResponse(csv_rows(CSV_HEADER, rows), content_type="text/csv")
        name = f"licence-usage-{self.brand.slug}-{start.isoformat()}-{end.isoformat()}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class LedgerView(CreditsPageMixin, View):
    """Every movement of the brand's credits, newest first."""

    def get(self, request):
        kind = request.GET.get("kind", "")
        kinds = [kind] if kind in Kind.values else DEFAULT_LEDGER_KINDS
        distribution = request.GET.get("distribution", "")
        entries = ledger_list(
            brand=self.brand,
            kinds=kinds if kind != "all" else None,
            distribution_id=int(distribution) if distribution.isdigit() else None,
        )
        page = Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "credits/ledger.html",
            {
                "page": page,
                "kind": kind,
                "kinds": Kind.choices,
                "balance": credits_balance(brand=self.brand),
            },
        )
