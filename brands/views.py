from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from brands.context import SESSION_BRAND_KEY, user_memberships
from brands.forms import BrandPoliciesForm
from brands.models import ApiKey
from brands.roles import Role, role_allows
from brands.scoping import get_for_brand
from brands.services import api_key_create, api_key_revoke, brand_send_policies_update


class BrandPageMixin(LoginRequiredMixin):
    """Pages: a logged-in member of the current brand with the role this view needs.

    ``read_role`` guards GET/HEAD, ``write_role`` every other method (like the API).
    Querysets go through ``scoped``; one object through ``get_scoped`` (404 across brands).
    """

    read_role = Role.VIEWER
    write_role = Role.PROJECT_ADMIN

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        context = request.brand_context
        if context.brand is None:
            return render(request, "brands/no_brand.html", status=403)
        required = self.read_role if request.method in ("GET", "HEAD") else self.write_role
        if not role_allows(context.role, required):
            raise PermissionDenied("Your role in this brand does not allow this action.")
        self.brand = context.brand
        self.role = context.role
        return super().dispatch(request, *args, **kwargs)

    def scoped(self, queryset):
        return queryset.for_brand(self.brand)

    def get_scoped(self, source, **lookup):
        return get_for_brand(source, brand=self.brand, **lookup)

    def can(self, role: str) -> bool:
        return role_allows(self.role, role)


class BrandSwitchView(LoginRequiredMixin, View):
    def post(self, request):
        wanted = request.POST.get("brand")
        memberships = {str(m.brand_id): m for m in user_memberships(request.user)}
        if wanted not in memberships:
            messages.error(request, "You are not a member of that brand.")
        else:
            request.session[SESSION_BRAND_KEY] = memberships[wanted].brand_id
            messages.success(request, f"Now working in {memberships[wanted].brand.name}.")
        target = request.POST.get("next") or reverse("projects:list")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
            target = reverse("projects:list")
        return HttpResponseRedirect(target)


class BrandSettingsView(BrandPageMixin, View):
    """Brand settings and API keys: brand admins only."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def get(self, request, new_key: str | None = None):
        return render(
            request,
            "brands/settings.html",
            {
                "brand": self.brand,
                "api_keys": self.scoped(ApiKey.objects.all()),
                "new_key": new_key,
                "roles": Role.choices,
                "policies_form": BrandPoliciesForm(instance=self.brand),
            },
        )

    def post(self, request):
        action = request.POST.get("action")
        if action == "create_key":
            name = (request.POST.get("name") or "").strip()
            role = request.POST.get("role") or Role.PROJECT_ADMIN
            if not name or role not in Role.values:
                messages.error(request, "An API key needs a name and a valid role.")
                return redirect("brands:settings")
            issued = api_key_create(brand=self.brand, name=name, role=role, created_by=request.user)
            messages.success(request, "Copy the key now: it will not be shown again.")
            return self.get(request, new_key=issued.key)
        if action == "send_policies":
            form = BrandPoliciesForm(request.POST, instance=self.brand)
            if form.is_valid():
                brand_send_policies_update(brand=self.brand, **form.cleaned_data)
                messages.success(request, "Time zone and quiet hours saved.")
            else:
                for field, errors in form.errors.items():
                    messages.error(request, f"{field}: {' '.join(errors)}")
            return redirect("brands:settings")
        if action == "revoke_key":
            api_key = self.get_scoped(ApiKey, pk=request.POST.get("key_id"))
            api_key_revoke(api_key=api_key)
            messages.success(request, f"Revoked {api_key.name}.")
        return redirect("brands:settings")
