"""The WSGI handler: Django's, with the providers' callbacks taken through a short chain.

A provider posts a callback for every message (its statuses) and every reply a recipient
sends: the busiest requests of a distribution, none of them from a person. They need nothing
of what most of ``MIDDLEWARE`` does for pages and the API (sessions, authentication, CSRF
tokens, messages, the current brand, static files), and each of those costs more than the
work of a small view. Requests under ``/webhooks/`` that resolve to a view of
``distributions.callbacks`` therefore run through ``CALLBACK_MIDDLEWARE`` only: the https
redirect, the security headers and host validation (``SecurityMiddleware``), the user agents
refused and the trailing slash (``CommonMiddleware``), each with Django's own exception
handling around it. Every other request, and the pages under ``/webhooks/endpoints/``, take
the whole ``MIDDLEWARE`` as before. The views are the same ones whichever way they are
reached (``tests/test_callback_handler.py`` checks that both answer alike).
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.urls import Resolver404, get_resolver, set_urlconf
from django.utils.log import log_response
from django.utils.module_loading import import_string

from distributions import callbacks

CALLBACK_PREFIX = "/webhooks/"
CALLBACK_VIEWS = frozenset(
    {callbacks.status_callback, callbacks.inbound_callback, callbacks.email_bounce_inbound}
)
# Of ``MIDDLEWARE``, what callbacks go through (in its order, those it lists).
CALLBACK_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
)


class CallbackShortcut:
    """For a handler of Django's (``BaseHandler``): provider callbacks take the short chain.
    Mixed into the WSGI handler below, and into the test client's (``tests/conftest.py``),
    so that every test posting a callback goes the way production does."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async)
        handler = convert_exception_to_response(_call_resolved_view)
        chosen = [path for path in settings.MIDDLEWARE if path in CALLBACK_MIDDLEWARE]
        for path in reversed(chosen):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._callback_chain = handler

    def get_response(self, request):
        match = _callback_match(request.path_info)
        if match is None:
            return super().get_response(request)
        set_urlconf(settings.ROOT_URLCONF)
        request.resolver_match = match
        response = self._callback_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response


def _callback_match(path: str):
    """The URL match of a provider callback (the main URLconf's, so that the routes stay in
    one place), else None."""
    if not path.startswith(CALLBACK_PREFIX):
        return None
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return None
    return match if match.func in CALLBACK_VIEWS else None


def _call_resolved_view(request):
    match = request.resolver_match
    return match.func(request, *match.args, **match.kwargs)


class RelayWSGIHandler(CallbackShortcut, WSGIHandler):
    """``config.wsgi.application``."""
