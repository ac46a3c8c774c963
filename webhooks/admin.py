from django.contrib import admin

from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "brand", "is_enabled", "failing_since", "created_at"]
    list_filter = ["is_enabled"]
    exclude = ["secret"]  # encrypted at rest, never shown back
    # Made and re-pointed through webhooks.services (secret, request-forgery check) only.
    readonly_fields = ["brand", "url", "disabled_at", "failing_since", "created_by"]

    def has_add_permission(self, request):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "type", "object_key", "brand", "created_at"]
    list_filter = ["type"]
    readonly_fields = ["event_id", "brand", "type", "object_key", "payload", "created_at"]


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "at", "status_code", "latency_ms", "response_excerpt", "error"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "endpoint", "event", "state", "attempts", "status_code", "created_at"]
    list_filter = ["state"]
    raw_id_fields = ["endpoint", "event"]
    inlines = [AttemptInline]
