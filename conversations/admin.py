from django.contrib import admin

from conversations.models import Session, SmsKeyword, Turn, TwoWaySettings


@admin.register(SmsKeyword)
class SmsKeywordAdmin(admin.ModelAdmin):
    list_display = ["keyword", "sender", "project", "brand", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["keyword", "sender"]


@admin.register(TwoWaySettings)
class TwoWaySettingsAdmin(admin.ModelAdmin):
    list_display = ["project", "expiry_hours", "max_invalid", "updated_at"]


class TurnInline(admin.TabularInline):
    model = Turn
    fields = ["created_at", "direction", "kind", "body", "status", "sent_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["address", "sender", "project", "status", "position", "opened_at"]
    list_filter = ["status", "origin"]
    search_fields = ["address"]
    readonly_fields = [f.name for f in Session._meta.fields]
    inlines = [TurnInline]
