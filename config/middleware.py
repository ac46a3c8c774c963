"""Request plumbing that belongs to no app."""

from django.conf import settings
from django.http import JsonResponse
from django.urls import is_valid_path

from config.health import healthz


class HealthCheckMiddleware:
    """``/healthz/`` answers before host validation and the https redirect.

    The image's HEALTHCHECK (and a load balancer's probe) asks ``http://127.0.0.1:8000/healthz/``:
    that host is not in a production ALLOWED_HOSTS and the request is not https, so the
    middlewares below would answer 400 or a redirect and the container would never be healthy.
    The answer carries nothing but the database's reachability.
    """

    PATH = "/healthz/"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == self.PATH:
            return healthz(request)
        return self.get_response(request)


class ApiOptionalSlashMiddleware:
    """API paths answer with or without their trailing slash, in place, with no redirect.

    A REST client that writes ``/api/v1/distributions/7/history.csv`` or POSTs to
    ``/api/v1/projects`` must not trip on Django's APPEND_SLASH redirect (which also cannot
    carry a POST body). The path is rewritten only when it does not resolve as written and
    does with a slash, so the routes themselves keep one canonical form.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if path.startswith("/api/") and not path.endswith("/"):
            urlconf = getattr(request, "urlconf", None)
            if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
                request.path_info = f"{path}/"
                request.path = f"{request.path}/"
        return self.get_response(request)


class ApiBodyLimitMiddleware:
    """The API answers in its error shape whatever happens outside its views.

    API requests whose body is larger than ``RELAY_API_MAX_BODY_BYTES`` answer 413 before
    the body is read. A view that enforces a limit of its own (the participant import upload:
    50 MB, answered with the file's size) says so with ``enforces_own_body_limit = True``.
    Django's own error pages under ``/api/`` (a path that matches no route, such as
    ``/api/v1/projects/0.5/``; a CSRF refusal) become the same error in the API's shape.
    """

    PAGE_ERRORS = {
        400: ("invalid", "Bad request."),
        403: ("permission_denied", "You do not have permission to perform this action."),
        404: ("not_found", "Not found."),
        405: ("method_not_allowed", "Method not allowed."),
        413: ("too_large", "The request body is larger than the API takes."),
    }

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path_info.startswith("/api/")
            and response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
        ):
            code, message = self.PAGE_ERRORS.get(response.status_code, ("error", "Error."))
            shaped = api_error(response.status_code, code, message)
            if response.has_header("Allow"):
                shaped["Allow"] = response["Allow"]
            return shaped
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.path_info.startswith("/api/"):
            return None
        if getattr(getattr(view_func, "cls", None), "enforces_own_body_limit", False):
            return None
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return api_error(400, "invalid", "The Content-Length header is not a number.")
        limit = settings.RELAY_API_MAX_BODY_BYTES
        if length > limit:
            return api_error(
                413,
                "too_large",
                f"The request body is {length:,} bytes; the API takes at most {limit:,}.",
            )
        return None


def api_error(status: int, code: str, message: str, fields: dict | None = None) -> JsonResponse:
    """An answer in the API's error shape, for plumbing that runs outside DRF's views."""
    return JsonResponse(
        {"error": {"code": code, "message": message, "fields": fields or {}}}, status=status
    )
