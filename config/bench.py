"""Endpoints for benchmarks only (``bench/links_bench.py``): mounted when
``RELAY_BENCH_ENDPOINTS`` is on, never in production paths.

``noop`` is the framework's ceiling: the same middleware, URL resolver and DRF view machinery
(content negotiation, JSON rendering) as every API call, and nothing else (no
authentication, no throttle, no database). ``noop-auth`` adds what every API call also pays:
API-key authentication and the per-key throttle (Redis when ``REDIS_URL`` is set)."""

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


urlpatterns = [
    path("noop/", Noop.as_view(), name="bench-noop"),
    path("noop-auth/", NoopAuthenticated.as_view(), name="bench-noop-auth"),
]
