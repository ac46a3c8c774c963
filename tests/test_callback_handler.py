"""config.handlers: provider callbacks take the short middleware chain (the https redirect,
security headers, host validation, refused user agents), every other request the whole
``MIDDLEWARE``; the production WSGI application is that handler."""

from __future__ import annotations

import io
import sys
from urllib.parse import urlencode

import pytest

from config.handlers import RelayWSGIHandler
from optouts.models import InboundMessage
from tests.test_optout_support import (
    INBOUND_PATH,
    SENDER_A,
    TOKEN_A,
    configure_numbers,
    inbound_params,
    post_inbound,
    sign,
)

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"


@pytest.fixture
def numbers(tenancy, settings):
    return configure_numbers(tenancy, settings)


def _reply(client, body="Hello", **kwargs):
    return post_inbound(
        client, inbound_params(from_=PHONE, to=SENDER_A, body=body), token=TOKEN_A, **kwargs
    )


def test_a_callback_skips_the_page_middleware_and_keeps_the_security_headers(client, numbers):
    response = _reply(client)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert InboundMessage.objects.get().body == "Hello"
    request = response.wsgi_request
    # No session, user or brand was made for it (the page middleware did not run) ...
    assert not hasattr(request, "session") and not hasattr(request, "user")
    assert request.resolver_match.url_name == "inbound"
    # ... but SecurityMiddleware's headers are there, as on every answer.
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "Cookie" not in response.get("Vary", "")


def test_a_page_under_webhooks_takes_the_whole_middleware(client, numbers):
    response = client.get("/webhooks/endpoints/")
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert hasattr(response.wsgi_request, "session")


def test_a_callback_for_a_host_not_allowed_is_refused_before_its_view(client, numbers):
    response = _reply(client, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert not InboundMessage.objects.exists()


def test_a_callback_over_http_is_redirected_where_https_is_required(client, numbers, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = _reply(client)
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{INBOUND_PATH}"
    assert not InboundMessage.objects.exists()


def test_a_refused_user_agent_is_refused(client, numbers, settings):
    import re

    settings.DISALLOWED_USER_AGENTS = [re.compile("badbot")]
    assert _reply(client, HTTP_USER_AGENT="badbot/1.0").status_code == 403
    assert not InboundMessage.objects.exists()


def test_callback_errors_answer_as_before(client, numbers):
    assert client.get(INBOUND_PATH).status_code == 405
    assert client.post("/webhooks/nosuchprovider/inbound/", {"x": "1"}).status_code == 404
    forged = _reply(client, signature="forged")
    assert forged.status_code == 403
    # Without its trailing slash the path is not a callback: CommonMiddleware's redirect.
    assert client.get(INBOUND_PATH.rstrip("/")).status_code == 301
    assert not InboundMessage.objects.exists()


def test_the_production_application_stores_a_signed_reply(numbers, wsgi_in_test_transaction):
    from config.wsgi import application

    assert isinstance(application, RelayWSGIHandler)
    params = inbound_params(from_=PHONE, to=SENDER_A, body="Hi there")
    body = urlencode(params).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": INBOUND_PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_TWILIO_SIGNATURE": sign(params, TOKEN_A),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    answers = []
    chunks = application(environ, lambda status, headers: answers.append((status, headers)))
    content = b"".join(chunks)
    chunks.close()
    assert answers[0][0] == "200 OK"
    assert content.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Response>')
    assert InboundMessage.objects.get().body == "Hi there"
