from django.contrib import admin

from optouts.models import Consent, InboundMessage, OptOut, OptOutEvent


@admin.register(OptOut)
class OptOutAdmin(admin.ModelAdmin):
    list_display = ("address", "brand", "channel", "source", "scope", "active", "created_at")
    list_filter = ("channel", "source", "scope", "active")
    search_fields = ("address",)
    raw_id_fields = ("person",)
    readonly_fields = ("created_at", "opted_in_at")


@admin.register(OptOutEvent)
class OptOutEventAdmin(admin.ModelAdmin):
    """The audit trail is append-only: read it here, never edit it."""

    list_display = ("created_at", "address", "brand", "action", "source", "scope")
    list_filter = ("action", "source", "scope")
    search_fields = ("address",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    """Every reply received, including those of numbers that belong to no brand."""

    list_display = ("received_at", "from_number", "to_number", "brand", "kind", "action")
    list_filter = ("kind", "action")
    search_fields = ("from_number", "to_number", "body", "provider_sid")
    raw_id_fields = ("message", "person", "optout")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    """Consents come from the number's yes and go by an opt-out or an admin's withdrawal (the
    API, with its audit event): read here, never edited."""

    list_display = ("address", "project", "brand", "active", "granted_at", "withdrawn_at")
    list_filter = ("active",)
    search_fields = ("address",)
    raw_id_fields = ("project", "inbound")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
