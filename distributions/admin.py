"""The platform operator's side of email: each brand's weekly email limit and transport,
verifying From domains, and the bounce reports as received. Secrets are never shown."""

from __future__ import annotations

from django.contrib import admin

from distributions.email_services import email_domain_verify
from distributions.models import (
    BounceReport,
    DistributionAudit,
    EmailAccount,
    EmailDomain,
    LibraryMessage,
)


@admin.register(EmailAccount)
class EmailAccountAdmin(admin.ModelAdmin):
    list_display = ["brand", "transport", "weekly_limit", "default_from_address", "updated_at"]
    list_editable = ["weekly_limit"]
    search_fields = ["brand__name", "brand__slug"]
    fields = [
        "brand",
        "weekly_limit",
        "transport",
        "smtp_host",
        "smtp_port",
        "smtp_security",
        "smtp_username",
        "smtp_password_redacted",
        "default_from_name",
        "default_from_address",
        "default_reply_to",
        "messages_per_second",
    ]
    readonly_fields = ["smtp_password_redacted"]


@admin.register(EmailDomain)
class EmailDomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "brand", "verified_at", "dkim_selector"]
    list_filter = ["verified_at"]
    search_fields = ["domain", "brand__name"]
    fields = ["brand", "domain", "verified_at", "dkim_selector"]
    readonly_fields = ["verified_at"]
    actions = ["verify"]

    @admin.action(description="Mark verified (DNS records checked)")
    def verify(self, request, queryset):
        for domain in queryset:
            email_domain_verify(domain=domain, actor=request.user)


@admin.register(BounceReport)
class BounceReportAdmin(admin.ModelAdmin):
    list_display = ["received_at", "brand", "recipient", "status_code", "action"]
    list_filter = ["action"]
    search_fields = ["recipient"]
    readonly_fields = [
        "brand",
        "message",
        "recipient",
        "status_code",
        "diagnostic",
        "action",
        "raw",
        "received_at",
    ]


@admin.register(DistributionAudit)
class DistributionAuditAdmin(admin.ModelAdmin):
    """The audit trail is read only: it records what happened."""

    list_display = ["at", "brand", "distribution_ref", "distribution_name", "action", "actor"]
    list_filter = ["action"]
    search_fields = ["distribution_name", "brand__name"]
    readonly_fields = [
        "brand",
        "distribution",
        "distribution_ref",
        "distribution_name",
        "action",
        "actor",
        "detail",
        "at",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LibraryMessage)
class LibraryMessageAdmin(admin.ModelAdmin):
    list_display = ["name", "brand", "channel", "type", "updated_at"]
    list_filter = ["channel", "type"]
    search_fields = ["name", "brand__name"]
