"""Endpoints for benchmarks only (``bench/links_bench.py``): mounted when
``RELAY_BENCH_ENDPOINTS`` is on, never in production paths.

``noop`` is the framework's ceiling: the same middleware, URL resolver and DRF view machinery
(content negotiation, JSON rendering) as every API call, and nothing else (no
authentication, no throttle, no database). ``noop-auth`` adds what every API call also pays:
API-key authentication and the per-key throttle (Redis when ``REDIS_URL`` is set);
``post-auth`` takes the one call's request and answers a link-sized body, with no work between.
"""

from django.urls import path
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView


class Noop(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        return Response({"ok": True})


class NoopAuthenticated(Noop):
    authentication_classes = APIView.authentication_classes
    permission_classes = [IsAuthenticated]
    throttle_classes = APIView.throttle_classes


class PostAuthenticated(NoopAuthenticated):
    """The one call's request (its JSON body, key and throttle) parsed, and an answer of a
    link's size, without validation or database: what the framework costs for that call."""

    def post(self, request):
        data = request.data
        transaction = data.get("transaction") if isinstance(data, dict) else None
        return Response(
            {
                "link_id": 123456,
                "token": "AbCdEfGhJkLm",
                "url": "http://127.0.0.1:8000/s/AbCdEfGhJkLm",
                "expires_at": None,
                "person": 1234,
                "person_id": "C-1234",
                "participant": 5678,
                "transaction": 91011,
                "transaction_id": (transaction or {}).get("id", ""),
                "distribution": 3,
                "created": True,
            },
            status=201,
        )


urlpatterns = [
    path("noop/", Noop.as_view(), name="bench-noop"),
    path("noop-auth/", NoopAuthenticated.as_view(), name="bench-noop-auth"),
    path("post-auth/", PostAuthenticated.as_view(), name="bench-post-auth"),
]
