"""Request plumbing that belongs to no app."""

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
