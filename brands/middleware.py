from django.utils.functional import SimpleLazyObject

from brands.context import context_for_user


class CurrentBrandMiddleware:
    """Sets ``request.brand_context`` (lazily) for browser sessions.

    The API resolves its own context after authentication (see ``brands.permissions``), because
    an API key, not the session, decides the brand there.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.brand_context = SimpleLazyObject(
            lambda: context_for_user(request.user, getattr(request, "session", None))
        )
        return self.get_response(request)
