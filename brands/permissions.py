from rest_framework import permissions

from brands.context import NO_BRAND, context_for_api_key, context_for_user
from brands.models import ApiKey
from brands.roles import Role, role_allows

SAFE_METHODS = permissions.SAFE_METHODS


def resolve_api_context(request):
    """Set ``request.brand_context`` from the API key, else from the session user."""
    context = getattr(request, "_relay_brand_context", None)
    if context is not None:
        return context
    if isinstance(request.auth, ApiKey):
        context = context_for_api_key(request.auth)
    elif request.user and request.user.is_authenticated:
        context = context_for_user(request.user, getattr(request, "session", None))
    else:
        context = NO_BRAND
    request._relay_brand_context = context
    request.brand_context = context
    return context


class HasBrandRole(permissions.BasePermission):
    """The caller belongs to a brand and has the role the view asks for this method.

    Views declare ``read_role`` (GET, HEAD, OPTIONS) and ``write_role`` (others); defaults are
    viewer and project admin. ``role_for_method`` can refine per method.
    """

    message = "Your role in this brand does not allow this action."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        context = resolve_api_context(request)
        if context.brand is None:
            self.message = "You do not belong to any brand."
            return False
        required = required_role(view, request.method)
        return role_allows(context.role, required)


def required_role(view, method: str) -> str:
    by_method = getattr(view, "role_for_method", None) or {}
    if method in by_method:
        return by_method[method]
    if method in SAFE_METHODS:
        return getattr(view, "read_role", Role.VIEWER)
    return getattr(view, "write_role", Role.PROJECT_ADMIN)
