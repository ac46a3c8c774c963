from brands.context import user_memberships


def current_brand(request):
    context = getattr(request, "brand_context", None)
    if context is None or not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "current_brand": context.brand,
        "current_role": context.role,
        "my_memberships": user_memberships(request.user),
    }
