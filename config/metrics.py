"""``GET /metrics/``: Prometheus metrics of the send engine (``distributions.metrics``).

Open to a bearer token (``RELAY_METRICS_TOKEN``) or to the networks in
``RELAY_METRICS_ALLOW`` (loopback by default); anyone else gets 404, as if nothing were there.
Behind a proxy, ``REMOTE_ADDR`` is the proxy's: use the token, or allow the scraper's network.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from distributions import metrics


class EngineCollector:
    def collect(self):
        yield from metrics.collect()


def allowed(request) -> bool:
    token = settings.RELAY_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.RELAY_METRICS_ALLOW
    )


@require_GET
def metrics_view(request):
    if not allowed(request):
        raise Http404
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
