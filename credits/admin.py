"""The platform operator's side of credits: the rate card (edited or loaded from a CSV),
grants and adjustments, and read-only views of the ledger and the reservations."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path, reverse

from core.csvio import csv_rows
from credits.models import CountryRate, CreditAccount, CreditEntry, CreditReservation, RateCard
from credits.rates import country_name, rate_card_csv_rows, rate_card_load
from credits.selectors import credits_balance
from credits.services import credits_adjust, credits_grant, parse_amount

Kind = CreditEntry.Kind


@admin.register(RateCard)
class RateCardAdmin(admin.ModelAdmin):
    list_display = ["__str__", "default_rate", "default_inbound_rate", "updated_at"]

    def has_add_permission(self, request):
        return not RateCard.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


class RateCardUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV: country,credits_per_segment[,enabled][,note]")
    replace = forms.BooleanField(
        required=False,
        help_text="Countries absent from the file lose their own rate (they cost the default).",
    )
    dry_run = forms.BooleanField(required=False, help_text="Check the file, write nothing.")


@admin.register(CountryRate)
class CountryRateAdmin(admin.ModelAdmin):
    list_display = ["country", "name", "rate", "inbound_rate", "enabled", "note", "updated_at"]
    list_editable = ["rate", "inbound_rate", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["country", "note"]
    actions = ["export_csv", "disable", "enable"]
    change_list_template = "admin/credits/countryrate/change_list.html"

    @admin.display(description="Country")
    def name(self, obj):
        return country_name(obj.country)

    def get_urls(self):
        return [
            path(
                "load-csv/",
                self.admin_site.admin_view(self.load_csv_view),
                name="credits_countryrate_load_csv",
            ),
            path(
                "export-csv/",
                self.admin_site.admin_view(self.export_all_view),
                name="credits_countryrate_export_csv",
            ),
            *super().get_urls(),
        ]

    def load_csv_view(self, request):
        """Validate the whole file first; write it in one transaction, or nothing."""
        if not self.has_change_permission(request) or not self.has_add_permission(request):
            messages.error(request, "You may not change the rate card.")
            return HttpResponseRedirect(reverse("admin:credits_countryrate_changelist"))
        errors: list[str] = []
        form = RateCardUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            raw = form.cleaned_data["file"].read()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                errors = ["The file is not UTF-8 text."]
            else:
                try:
                    load = rate_card_load(
                        text=text,
                        replace=form.cleaned_data["replace"],
                        dry_run=form.cleaned_data["dry_run"],
                    )
                except ValidationError as exc:
                    errors = exc.messages
                else:
                    verb = "would be" if form.cleaned_data["dry_run"] else "were"
                    default = (
                        f" The default rate {verb} set to {load.default_rate}."
                        if load.default_rate is not None
                        else ""
                    )
                    messages.success(
                        request,
                        f"{load.created} countries {verb} added, {load.updated} updated, "
                        f"{load.deleted} removed.{default}",
                    )
                    if not form.cleaned_data["dry_run"]:
                        return HttpResponseRedirect(reverse("admin:credits_countryrate_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Load the rate card from a CSV",
            "form": form,
            "errors": errors,
        }
        return render(request, "admin/credits/countryrate/load_csv.html", context)

    def export_all_view(self, request):
        return self._csv_response(rate_card_csv_rows())

    @staticmethod
    def _csv_response(rows) -> StreamingHttpResponse:
        header, *body = list(rows)
        response = StreamingHttpResponse(csv_rows(header, body), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="rate-card.csv"'
        return response

    @admin.action(description="Export the selected rates as CSV")
    def export_csv(self, request, queryset):
        rows = [["country", "credits_per_segment", "enabled", "note"]]
        rows += [
            [rate.country, str(rate.rate), "yes" if rate.enabled else "no", rate.note]
            for rate in queryset.order_by("country")
        ]
        return self._csv_response(rows)

    @admin.action(description="Disable sending to the selected countries")
    def disable(self, request, queryset):
        count = queryset.update(enabled=False)
        messages.success(request, f"{count} countries disabled: their recipients are skipped.")

    @admin.action(description="Enable sending to the selected countries")
    def enable(self, request, queryset):
        count = queryset.update(enabled=True)
        messages.success(request, f"{count} countries enabled.")


class CreditEntryAdminForm(forms.ModelForm):
    """The operator adds credits (grant, purchase) or corrects a balance (adjustment)."""

    kind = forms.ChoiceField(
        choices=[(Kind.GRANT, "Grant"), (Kind.PURCHASE, "Purchase"), (Kind.ADJUST, "Adjustment")]
    )
    amount = forms.CharField(
        help_text="Credits. An adjustment may be negative (it cannot take reserved credits)."
    )

    class Meta:
        model = CreditEntry
        fields = ["brand", "kind", "amount", "note"]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        try:
            cleaned["amount"] = parse_amount(
                cleaned.get("amount"), allow_negative=kind == Kind.ADJUST
            )
        except ValidationError as exc:
            self.add_error("amount", exc.message_dict["amount"])
        if kind == Kind.ADJUST and not (cleaned.get("note") or "").strip():
            self.add_error("note", "Say why the balance is adjusted.")
        return cleaned

    def _post_clean(self):
        pass  # the entry is written by the service in save_model, not from this form


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    """The ledger, read-only: entries are only ever added (grants and adjustments here)."""

    form = CreditEntryAdminForm
    list_display = [
        "created_at",
        "brand",
        "kind",
        "amount",
        "held",
        "distribution",
        "country",
        "segments",
        "actor",
        "note",
    ]
    list_filter = ["kind", "brand"]
    search_fields = ["note", "brand__name", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["brand", "distribution", "actor"]
    raw_id_fields = ["distribution", "message", "project", "reservation"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["brand", "kind", "amount", "note"]
        return [field.name for field in CreditEntry._meta.fields]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj) if obj is not None else []

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if data["kind"] == Kind.ADJUST:
            entry = credits_adjust(
                brand=data["brand"], amount=data["amount"], actor=request.user, note=data["note"]
            )
        else:
            entry = credits_grant(
                brand=data["brand"],
                amount=data["amount"],
                kind=data["kind"],
                actor=request.user,
                note=data["note"],
            )
        obj.__dict__.update(entry.__dict__)  # the admin logs and redirects to the new entry

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except ValidationError as exc:  # e.g. an adjustment larger than what is available
            messages.error(request, "; ".join(exc.messages))
            return HttpResponseRedirect(request.get_full_path())


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    list_display = ["brand", "balance", "reserved", "available", "created_at"]
    search_fields = ["brand__name"]
    readonly_fields = ["brand", "summed_upto_id", "summed_amount", "summed_held", "created_at"]

    def _figures(self, obj):
        cache = getattr(self, "_figure_cache", {})
        if obj.pk not in cache:
            cache[obj.pk] = credits_balance(brand=obj.brand)
            self._figure_cache = cache
        return cache[obj.pk]

    @admin.display(description="Balance")
    def balance(self, obj):
        return self._figures(obj).balance

    @admin.display(description="Reserved")
    def reserved(self, obj):
        return self._figures(obj).reserved

    @admin.display(description="Available")
    def available(self, obj):
        return self._figures(obj).available

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        self._figure_cache = {}
        return super().get_queryset(request).select_related("brand")


@admin.register(CreditReservation)
class CreditReservationAdmin(admin.ModelAdmin):
    list_display = ["pk", "brand", "distribution", "estimate", "self_service", "opened_at"]
    list_display += ["closed_at"]
    list_filter = ["self_service", "brand"]
    raw_id_fields = ["distribution", "project"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
