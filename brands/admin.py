from django.contrib import admin

from brands.models import ApiKey, Brand, Membership


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "default_country", "time_zone", "integration_model"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "brand", "role", "created_at"]
    list_filter = ["role", "brand"]
    autocomplete_fields = ["user", "brand"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued from the brand's settings page or the API (the secret is shown once)."""

    list_display = ["name", "brand", "prefix", "role", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["role", "brand"]
    readonly_fields = ["prefix", "secret_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False
