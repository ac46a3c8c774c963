"""Proves tests/fake_twilio.py through the REAL twilio SDK (sync and async) over HTTP.

Runs without Django:  .venv/bin/python -m pytest tests/test_fake_twilio.py -p no:django -q
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

try:
    from tests.fake_twilio import (
        DEFAULT_ACCOUNT_SID,
        DEFAULT_AUTH_TOKEN,
        DEFAULT_FROM,
        FakeTwilio,
        RemoteFakeTwilio,
        count_segments,
        twilio_client_for,
        twilio_signature,
    )
except ImportError:  # run from inside tests/ or with a different rootdir/import mode
    from fake_twilio import (  # type: ignore[no-redef]
        DEFAULT_ACCOUNT_SID,
        DEFAULT_AUTH_TOKEN,
        DEFAULT_FROM,
        FakeTwilio,
        RemoteFakeTwilio,
        count_segments,
        twilio_client_for,
        twilio_signature,
    )

# twilio 9.x's AsyncTwilioHttpClient uses aiohttp.BasicAuth / auth=, deprecated in aiohttp 3.14.
pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parent.parent
SENDER = DEFAULT_FROM
MG_SID = "MG" + "0123456789abcdef" * 2
SID_RE = re.compile(r"^SM[0-9a-f]{32}$")
RFC2822_RE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


# ------------------------------------------------------------------------------------ helpers
class Receiver:
    """Tiny threaded HTTP server that records form POSTs (status callbacks, webhooks)."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "text/plain"):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.requests: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                params = dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
                with receiver._cond:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "url": f"{receiver.base_url}{self.path}",
                            "headers": dict(self.headers),
                            "params": params,
                        }
                    )
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.requests) >= n, timeout)
            assert len(self.requests) >= n, f"got {len(self.requests)} of {n} requests"
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def valid_signature(req: dict[str, Any], token: str) -> bool:
    return RequestValidator(token).validate(
        req["url"], req["params"], req["headers"]["X-Twilio-Signature"]
    )


def page_error(exc: TwilioException) -> tuple[int, int]:
    """(HTTP status, Twilio code) of the TwilioException that a failed list()/page() raises."""
    response = exc.args[1]
    return response.status_code, json.loads(response.text)["code"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_request(
    url: str, method: str = "GET", data: dict | None = None, auth: tuple | None = None
) -> tuple[int, dict[str, str], Any]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def eventually_sent_to(fake, number: str, timeout: float = 30.0) -> int:
    """The fake's count for ``number`` once it is not zero: a request the client gave up on is
    still read and processed by the server, later on a busy machine (``timeout`` only bounds a
    request that was never processed)."""
    deadline = time.monotonic() + timeout
    while (count := fake.sent_to(number)) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def send(client: Client, to: str = "+15551230001", **kw: Any) -> Any:
    kw.setdefault("from_", SENDER)
    kw.setdefault("body", "Hello from Relay")
    return client.messages.create(to=to, **kw)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def fake():
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def client(fake):
    return twilio_client_for(fake)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# ------------------------------------------------------------------------------------ messages
def test_create_message_sync_has_twilio_shape(fake, client):
    msg = send(client, to="+15551230001", body="Hi there")
    assert SID_RE.match(msg.sid)
    assert msg.status == "queued"
    assert msg.account_sid == fake.account_sid == DEFAULT_ACCOUNT_SID
    assert (msg.to, msg.from_, msg.body) == ("+15551230001", SENDER, "Hi there")
    assert msg.messaging_service_sid is None
    assert msg.num_segments == "1"
    assert msg.direction == "outbound-api"
    assert msg.api_version == "2010-04-01"
    assert msg.error_code is None and msg.error_message is None and msg.price is None
    assert msg.uri == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{msg.sid}.json"
    assert isinstance(msg.date_created, dt.datetime) and msg.date_created.tzinfo is not None
    assert msg.date_sent is None

    [stored] = fake.messages
    assert stored["sid"] == msg.sid
    assert RFC2822_RE.match(stored["date_created"]) and RFC2822_RE.match(stored["date_updated"])
    assert fake.sent_to("+15551230001") == 1
    stats = fake.stats()
    assert stats["accepted"] == 1 and stats["by_to"] == {"+15551230001": 1}


def test_fetch_message_and_unknown_sid_is_404(fake, client):
    msg = send(client)
    fetched = client.messages(msg.sid).fetch()
    assert fetched.sid == msg.sid
    assert fetched.status == "delivered"  # no callback & no delay: lifecycle is immediate
    assert fetched.date_sent is not None and fetched.price is not None
    with pytest.raises(TwilioRestException) as exc:
        client.messages("SM" + "0" * 32).fetch()
    assert exc.value.status == 404 and exc.value.code == 20404


def test_messaging_service_send_is_accepted_then_assigned_a_sender(fake, client):
    msg = client.messages.create(to="+15551230002", messaging_service_sid=MG_SID, body="x")
    assert msg.status == "accepted"
    assert msg.from_ is None and msg.num_segments == "0"
    assert msg.messaging_service_sid == MG_SID
    fetched = client.messages(msg.sid).fetch()
    assert fetched.status == "delivered" and fetched.from_ == DEFAULT_FROM


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "5551234"}, 21211),
        ({"to": "+1555abc"}, 21211),
        ({"to": ""}, 21604),
        ({"body": None}, FakeTwilio.MISSING_BODY_CODE),
        ({"body": "x" * 1601}, 21617),
        ({"from_": None}, 21603),
        ({"from_": "not a number!"}, 21212),
        ({"from_": None, "messaging_service_sid": "MGnope"}, 21701),
    ],
)
def test_create_validation_errors(fake, client, kwargs, code):
    args = {"to": "+15551230001", "from_": SENDER, "body": "hi", **kwargs}
    with pytest.raises(TwilioRestException) as exc:
        client.messages.create(**args)
    assert exc.value.status == 400
    assert exc.value.code == code
    assert fake.messages == []
    assert fake.stats()["rejected"] == 1


def test_missing_body_code_is_configurable():
    with FakeTwilio() as server:
        server.MISSING_BODY_CODE = 21602
        with pytest.raises(TwilioRestException) as exc:
            twilio_client_for(server).messages.create(to="+15551230001", from_=SENDER)
        assert exc.value.code == 21602 and "body is required" in exc.value.msg


def test_list_filters_and_paging_across_pages_sync(fake, client):
    for i in range(23):
        send(client, to="+15550000001", body=f"a{i}")
    for i in range(4):
        send(client, to="+15550000002", body=f"b{i}", from_="+15005550009")
    before = fake.stats()["requests"]
    listed = client.messages.list(to="+15550000001", page_size=5)
    assert len(listed) == 23
    assert [m.body for m in listed] == [f"a{i}" for i in reversed(range(23))]  # newest first
    assert fake.stats()["requests"] - before == 5  # 5 pages of 5 via next_page_uri

    assert len(client.messages.list(to="+15550000001", limit=7, page_size=3)) == 7
    assert {m.body for m in client.messages.list(from_="+15005550009")} == {
        "b0",
        "b1",
        "b2",
        "b3",
    }
    assert len(client.messages.list()) == 27

    page = client.messages.page(to="+15550000001", page_size=10)
    assert page.next_page_url and "PageToken=PA" in page.next_page_url
    assert page.next_page_url.startswith(fake.base_url)
    second = page.next_page()
    third = second.next_page()
    assert len(list(second)) == 10 and len(list(third)) == 3
    assert third.next_page() is None


def test_page_token_paging_is_stable_when_new_messages_arrive(fake, client):
    for i in range(6):
        send(client, body=f"m{i}")
    first = client.messages.page(page_size=3)
    send(client, body="late")  # lands at the front; token paging is unaffected
    second = first.next_page()
    assert [m.body for m in second] == ["m2", "m1", "m0"]


def test_list_date_sent_filters():
    now = [dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC).timestamp()]
    with FakeTwilio(clock=lambda: now[0]) as server:
        client = twilio_client_for(server)
        for day in (1, 2, 3, 4):
            now[0] = dt.datetime(2024, 5, day, 12, 0, tzinfo=dt.UTC).timestamp()
            send(client, body=f"day{day}")

        def bodies(**kw: Any) -> list[str]:
            return sorted(m.body for m in client.messages.list(**kw))

        assert bodies(date_sent_after=dt.datetime(2024, 5, 3, tzinfo=dt.UTC)) == ["day3", "day4"]
        assert bodies(date_sent_before=dt.datetime(2024, 5, 2, 12, tzinfo=dt.UTC)) == [
            "day1",
            "day2",
        ]
        assert bodies(date_sent=dt.datetime(2024, 5, 2, tzinfo=dt.UTC)) == ["day2"]
        assert bodies(
            date_sent_after=dt.datetime(2024, 5, 2, tzinfo=dt.UTC),
            date_sent_before=dt.datetime(2024, 5, 3, 23, tzinfo=dt.UTC),
        ) == ["day2", "day3"]
        # date-only strings as Twilio documents them (inclusive days)
        assert bodies(date_sent_before="2024-05-02") == ["day1", "day2"]
        [m] = client.messages.list(date_sent="2024-05-04")
        assert m.date_sent == dt.datetime(2024, 5, 4, 12, 0, tzinfo=dt.UTC)


def test_update_redacts_body_and_delete(fake, client):
    msg = send(client, body="secret")
    assert client.messages(msg.sid).update(body="").body == ""
    assert client.messages(msg.sid).delete() is True
    with pytest.raises(TwilioRestException) as exc:
        client.messages(msg.sid).fetch()
    assert exc.value.status == 404


def test_async_client_create_list_fetch(fake):
    async def scenario() -> None:
        client = twilio_client_for(fake, async_=True)
        try:
            assert isinstance(client.http_client, AsyncTwilioHttpClient)
            created = [
                await client.messages.create_async(
                    to="+15550000009", from_=SENDER, body=f"async {i}"
                )
                for i in range(7)
            ]
            assert all(SID_RE.match(m.sid) and m.status == "queued" for m in created)
            listed = await client.messages.list_async(to="+15550000009", page_size=3)
            assert [m.sid for m in listed] == [m.sid for m in reversed(created)]
            fetched = await client.messages(created[0].sid).fetch_async()
            assert fetched.body == "async 0"
            with pytest.raises(TwilioRestException) as exc:
                await client.messages.create_async(to="bad", from_=SENDER, body="x")
            assert exc.value.code == 21211
        finally:
            await client.http_client.close()

    asyncio.run(scenario())
    assert fake.sent_to("+15550000009") == 7


# ------------------------------------------------------------------------------------ auth
def test_bad_credentials_are_401_20003_sync_and_async(fake):
    bad = twilio_client_for(fake, auth_token="0" * 32)
    with pytest.raises(TwilioRestException) as exc:
        send(bad)
    assert exc.value.status == 401 and exc.value.code == 20003

    unknown = twilio_client_for(fake, account_sid="AC" + "1" * 32, auth_token="x")
    with pytest.raises(TwilioRestException) as exc:
        unknown.messages.create(to="+15551230001", from_=SENDER, body="x")
    assert exc.value.status == 401 and exc.value.code == 20003
    # NB: the SDK's list()/stream()/page() raise a plain TwilioException (not
    # TwilioRestException) carrying the raw response when a page fetch fails.
    with pytest.raises(TwilioException) as page_exc:
        unknown.messages.list()
    assert not isinstance(page_exc.value, TwilioRestException)
    assert page_error(page_exc.value) == (401, 20003)

    async def scenario() -> None:
        client = twilio_client_for(fake, auth_token="nope", async_=True)
        try:
            with pytest.raises(TwilioRestException) as aexc:
                await client.messages.create_async(to="+15551230001", from_=SENDER, body="x")
            assert aexc.value.status == 401 and aexc.value.code == 20003
        finally:
            await client.http_client.close()

    asyncio.run(scenario())
    assert fake.messages == []
    assert fake.stats()["auth_failures"] == 4


def test_401_body_and_headers_match_twilio(fake):
    url = f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    status, headers, body = raw_request(url)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert body["code"] == 20003 and body["status"] == 401
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert body["message"]
    status, _, body = raw_request(url, auth=(fake.account_sid, fake.auth_token))
    assert status == 200 and body["messages"] == [] and body["next_page_uri"] is None


def test_cannot_use_another_accounts_path(fake):
    other_sid, other_token = fake.add_account()
    client = twilio_client_for(fake, other_sid, other_token)
    client.messages.create(to="+15551230001", from_=SENDER, body="mine")
    intruder = Client(fake.account_sid, fake.auth_token, account_sid=other_sid)
    intruder.api.base_url = fake.base_url
    with pytest.raises(TwilioException) as exc:  # unrelated account (not a sub-account)
        intruder.messages.list()
    assert page_error(exc.value) == (401, 20003)
    with pytest.raises(TwilioRestException) as rest_exc:
        intruder.messages.create(to="+15551230001", from_=SENDER, body="not yours")
    assert rest_exc.value.status == 401


# ------------------------------------------------------------------------------------ accounts
def test_subaccount_create_fetch_and_use(fake, client):
    sub = client.api.v2010.accounts.create(friendly_name="Project 42")
    assert sub.sid.startswith("AC") and len(sub.sid) == 34 and sub.sid != fake.account_sid
    assert re.match(r"^[0-9a-f]{32}$", sub.auth_token)
    assert sub.owner_account_sid == fake.account_sid
    assert sub.friendly_name == "Project 42" and sub.status == "active"
    assert fake.accounts[sub.sid] == sub.auth_token

    # the new credentials work (this is how the product checks credentials)
    sub_client = twilio_client_for(fake, sub.sid, sub.auth_token)
    fetched = sub_client.api.v2010.accounts(sub.sid).fetch()
    assert fetched.sid == sub.sid and fetched.friendly_name == "Project 42"
    msg = sub_client.messages.create(to="+15551230077", from_=SENDER, body="from sub")
    assert msg.account_sid == sub.sid

    # the parent may fetch and act on its sub-account; the sub may not see the parent
    assert client.api.v2010.accounts(sub.sid).fetch().sid == sub.sid
    as_parent = twilio_client_for(fake, subaccount_sid=sub.sid)
    assert [m.sid for m in as_parent.messages.list()] == [msg.sid]
    assert client.messages.list() == []
    with pytest.raises(TwilioRestException) as exc:
        sub_client.api.v2010.accounts(fake.account_sid).fetch()
    assert exc.value.status == 404
    # wrong token for the sub-account
    with pytest.raises(TwilioRestException) as exc:
        twilio_client_for(fake, sub.sid, "f" * 32).api.v2010.accounts(sub.sid).fetch()
    assert exc.value.status == 401 and exc.value.code == 20003

    names = {a.friendly_name for a in client.api.v2010.accounts.list()}
    assert "Project 42" in names

    # suspend the sub-account: its credentials stop working
    client.api.v2010.accounts(sub.sid).update(status="suspended")
    with pytest.raises(TwilioRestException) as exc:
        sub_client.api.v2010.accounts(sub.sid).fetch()
    assert exc.value.status == 401


def test_configured_accounts_and_default_pair():
    accounts = {"AC" + "a" * 32: "t" * 32, "AC" + "b" * 32: "u" * 32}
    with FakeTwilio(accounts=accounts) as server:
        assert (server.account_sid, server.auth_token) == ("AC" + "a" * 32, "t" * 32)
        second = twilio_client_for(server, "AC" + "b" * 32)  # token looked up
        assert second.api.v2010.accounts("AC" + "b" * 32).fetch().sid == "AC" + "b" * 32
    with FakeTwilio() as default:
        assert (default.account_sid, default.auth_token) == (
            DEFAULT_ACCOUNT_SID,
            DEFAULT_AUTH_TOKEN,
        )


# ------------------------------------------------------------------------------------ faults
def test_fail_next_429_then_recovers(fake, client):
    fake.fail_next(2, status=429, retry_after=1)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as exc:
            send(client)
        assert exc.value.status == 429 and exc.value.code == 20429
    assert send(client).status == "queued"
    stats = fake.stats()
    assert stats["faults_injected"] == 2 and stats["rejected"] == 2 and stats["accepted"] == 1


def test_429_carries_retry_after_header(fake):
    fake.fail_next(1, status=429, retry_after=3)
    url = f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    form = {"To": "+15551230001", "From": SENDER, "Body": "x"}
    status, headers, body = raw_request(url, "POST", form, (fake.account_sid, fake.auth_token))
    assert status == 429 and headers["Retry-After"] == "3"
    assert body == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }


@pytest.mark.parametrize(("status", "code"), [(500, 20500), (503, 20503)])
def test_fail_next_server_errors(fake, client, status, code):
    fake.fail_next(1, status=status)
    with pytest.raises(TwilioRestException) as exc:
        send(client)
    assert exc.value.status == status and exc.value.code == code
    assert send(client).status == "queued"


def test_fail_next_scope_create_leaves_reads_alone_and_scope_all_does_not(fake, client):
    fake.fail_next(1, status=503)
    assert client.messages.list() == []  # reads unaffected by the default "create" scope
    with pytest.raises(TwilioRestException):
        send(client)
    fake.fail_next(1, status=500, scope="all")
    with pytest.raises(TwilioException) as exc:
        client.messages.list()
    assert page_error(exc.value) == (500, 20500)


def test_async_client_sees_faults(fake):
    fake.fail_next(1, status=429)
    fake.set_number_error("+15550006666", 21610)

    async def scenario() -> None:
        client = twilio_client_for(fake, async_=True)
        try:
            with pytest.raises(TwilioRestException) as exc:
                await client.messages.create_async(to="+15551230001", from_=SENDER, body="x")
            assert (exc.value.status, exc.value.code) == (429, 20429)
            with pytest.raises(TwilioRestException) as exc:
                await client.messages.create_async(to="+15550006666", from_=SENDER, body="x")
            assert (exc.value.status, exc.value.code) == (400, 21610)
        finally:
            await client.http_client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (21211, "not a valid phone number"),
        (21610, "Attempt to send to unsubscribed recipient"),
        (21408, "Permission to send an SMS has not been enabled"),
    ],
)
def test_number_errors(fake, client, code, text):
    fake.set_number_error("+15550001111", code)
    with pytest.raises(TwilioRestException) as exc:
        send(client, to="+15550001111")
    assert exc.value.status == 400 and exc.value.code == code and text in exc.value.msg
    assert send(client, to="+15550002222").status == "queued"  # other numbers unaffected
    assert fake.sent_to("+15550001111") == 0
    assert fake.stats()["rejected_by_code"] == {str(code): 1}
    fake.clear_number_error("+15550001111")
    assert send(client, to="+15550001111").status == "queued"


def test_magic_test_numbers_are_opt_in():
    with FakeTwilio(magic_numbers=True) as server:
        client = twilio_client_for(server)
        with pytest.raises(TwilioRestException) as exc:
            send(client, to="+15005550004")
        assert exc.value.code == 21610
        with pytest.raises(TwilioRestException) as exc:
            send(client, from_="+15005550001")
        assert exc.value.code == 21212
    with FakeTwilio() as server:
        assert send(twilio_client_for(server), to="+15005550004").status == "queued"


def test_latency_is_applied(fake, client):
    fake.set_latency(0.05)
    started = time.monotonic()
    send(client)
    assert time.monotonic() - started >= 0.05  # lower bound only
    fake.set_latency(0)


def test_hang_times_out_sync_client_and_message_is_still_created(fake):
    fake.set_hang(1.0, count=1)
    client = twilio_client_for(fake, timeout=0.2)
    with pytest.raises(requests.exceptions.Timeout):
        send(client, to="+15557770000")
    # like real Twilio: the timed-out request may still have been accepted
    assert eventually_sent_to(fake, "+15557770000") == 1
    assert send(client, to="+15557770000").status == "queued"  # hang was for 1 request only


def test_hang_times_out_async_client(fake):
    fake.set_hang(1.0, count=1, after_processing=True)

    async def scenario() -> None:
        client = twilio_client_for(fake, async_=True, timeout=0.2)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.messages.create_async(to="+15557770001", from_=SENDER, body="x")
        finally:
            await client.http_client.close()

    asyncio.run(scenario())
    # processed before the (delayed) response; on a busy machine the client's 0.2 s can run
    # out before the server has read the request, so wait for it to be processed
    assert eventually_sent_to(fake, "+15557770001") == 1


# ------------------------------------------------------------------------------------ callbacks
def test_status_callbacks_arrive_in_order_signed_and_valid(fake, client, receiver):
    url = f"{receiver.base_url}/twilio/status?project=7"
    msg = send(client, to="+15551239999", status_callback=url)
    fake.wait_idle()
    reqs = receiver.wait_for(2)
    assert [r["params"]["MessageStatus"] for r in reqs] == ["sent", "delivered"]
    for r in reqs:
        p = r["params"]
        assert r["url"] == url
        assert p["MessageSid"] == p["SmsSid"] == msg.sid
        assert p["SmsStatus"] == p["MessageStatus"]
        assert p["AccountSid"] == fake.account_sid
        assert (p["From"], p["To"], p["ApiVersion"]) == (SENDER, "+15551239999", "2010-04-01")
        assert "ErrorCode" not in p
        assert r["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert r["headers"]["I-Twilio-Idempotency-Token"]
        assert valid_signature(r, fake.auth_token)
        assert not valid_signature(r, "0" * 32)
        assert r["headers"]["X-Twilio-Signature"] == RequestValidator(
            fake.auth_token
        ).compute_signature(url, p)
    log = fake.callbacks
    assert [(e["message_status"], e["ok"], e["http_status"]) for e in log] == [
        ("sent", True, 200),
        ("delivered", True, 200),
    ]
    assert fake.get_message(msg.sid)["status"] == "delivered"
    assert fake.stats()["callbacks_sent"] == 2


def test_subaccount_callbacks_are_signed_with_the_subaccount_token(fake, client, receiver):
    sub = client.api.v2010.accounts.create(friendly_name="p")
    sub_client = twilio_client_for(fake, sub.sid, sub.auth_token)
    send(sub_client, status_callback=f"{receiver.base_url}/cb")
    reqs = receiver.wait_for(2)
    assert all(valid_signature(r, sub.auth_token) for r in reqs)
    assert not any(valid_signature(r, fake.auth_token) for r in reqs)


@pytest.mark.parametrize(("code", "status"), [(30007, "undelivered"), (30003, "undelivered")])
def test_delivery_failure_reported_via_callback(fake, client, receiver, code, status):
    fake.set_delivery_failure("+15550003333", code)
    msg = send(client, to="+15550003333", status_callback=f"{receiver.base_url}/s")
    assert msg.status == "queued"  # accepted synchronously
    reqs = receiver.wait_for(2)
    assert [r["params"]["MessageStatus"] for r in reqs] == ["sent", status]
    assert reqs[1]["params"]["ErrorCode"] == str(code)
    assert "ErrorCode" not in reqs[0]["params"]
    assert all(valid_signature(r, fake.auth_token) for r in reqs)
    fetched = client.messages(msg.sid).fetch()
    assert fetched.status == status and fetched.error_code == code and fetched.error_message


def test_failed_status_skips_sent(fake, client, receiver):
    fake.set_delivery_failure("+15550004444", 30008, status="failed")
    send(client, to="+15550004444", status_callback=f"{receiver.base_url}/s")
    fake.wait_idle()
    [req] = receiver.wait_for(1)
    assert req["params"]["MessageStatus"] == "failed" and req["params"]["ErrorCode"] == "30008"


def test_messaging_service_callbacks_start_with_queued(fake, client, receiver):
    client.messages.create(
        to="+15551230005",
        messaging_service_sid=MG_SID,
        body="x",
        status_callback=f"{receiver.base_url}/s",
    )
    fake.wait_idle()
    reqs = receiver.wait_for(3)
    assert [r["params"]["MessageStatus"] for r in reqs] == ["queued", "sent", "delivered"]
    assert all(r["params"]["MessagingServiceSid"] == MG_SID for r in reqs)
    assert reqs[-1]["params"]["From"] == DEFAULT_FROM


def test_callbacks_can_be_switched_off(receiver):
    with FakeTwilio(callbacks=False) as server:
        msg = send(twilio_client_for(server), status_callback=f"{receiver.base_url}/s")
        server.wait_idle()
        time.sleep(0.1)
        assert receiver.requests == [] and server.callbacks == []
        assert server.get_message(msg.sid)["status"] == "delivered"
        assert server.get_message(msg.sid)["status_callback"] == f"{receiver.base_url}/s"


def test_callbacks_can_be_delayed(fake, client, receiver):
    fake.set_callbacks(delay=0.3)
    msg = send(client, status_callback=f"{receiver.base_url}/s")
    assert fake.get_message(msg.sid)["status"] == "queued"
    assert receiver.requests == []
    fake.wait_idle(timeout=5)
    assert len(receiver.wait_for(2)) == 2
    assert fake.get_message(msg.sid)["status"] == "delivered"


def test_out_of_order_and_duplicate_callbacks(fake, client, receiver):
    fake.set_callbacks(out_of_order=True, duplicate=True)
    send(client, status_callback=f"{receiver.base_url}/s")
    fake.wait_idle()
    statuses = [r["params"]["MessageStatus"] for r in receiver.wait_for(4)]
    assert statuses == ["delivered", "delivered", "sent", "sent"]


def test_callback_failures_are_recorded_not_raised(fake, client):
    dead = f"http://127.0.0.1:{free_port()}/nobody-home"
    msg = send(client, status_callback=dead)
    assert msg.status == "queued"
    erroring = Receiver(status=500)
    try:
        send(client, status_callback=f"{erroring.base_url}/boom")
        send(client, status_callback="https://relay.example.com/never-contacted")
        fake.wait_idle()
    finally:
        erroring.close()
    failures = fake.callback_failures
    assert len(failures) == 6 and fake.stats()["callbacks_failed"] == 6
    by_url: dict[str, list[dict]] = {}
    for f in failures:
        by_url.setdefault(f["url"], []).append(f)
    assert all(f["error"] and f["http_status"] is None for f in by_url[dead])
    assert all(f["http_status"] == 500 for f in by_url[f"{erroring.base_url}/boom"])
    external = by_url["https://relay.example.com/never-contacted"]
    assert all("not loopback" in f["error"] for f in external)


def test_signature_helper_matches_sdk():
    token = "12345678901234567890123456789012"
    for url, params in [
        ("https://example.com/sms?x=1&y=two", {"Body": "héllo ✓", "From": "+1555", "A": ""}),
        ("http://127.0.0.1:8000/s", {}),
        ("http://127.0.0.1:8000/s", {"B": "2", "A": "1", "NumMedia": "0"}),
    ]:
        assert twilio_signature(token, url, params) == RequestValidator(token).compute_signature(
            url, params
        )


# ------------------------------------------------------------------------------------ inbound
def test_inbound_webhook_is_signed_and_stop_blocks_further_sends(fake, client, receiver):
    url = f"{receiver.base_url}/twilio/inbound"
    assert fake.inbound("+15558880000", SENDER, "STOP", url) == 200
    [req] = receiver.wait_for(1)
    p = req["params"]
    assert valid_signature(req, fake.auth_token)
    assert (p["From"], p["To"], p["Body"]) == ("+15558880000", SENDER, "STOP")
    assert p["MessageSid"] == p["SmsSid"] == p["SmsMessageSid"] and SID_RE.match(p["MessageSid"])
    assert p["AccountSid"] == fake.account_sid and p["NumMedia"] == "0"
    assert p["FromCountry"] == "US" and p["SmsStatus"] == "received"
    assert p["ApiVersion"] == "2010-04-01"
    assert fake.inbound_messages[0]["direction"] == "inbound"

    with pytest.raises(TwilioRestException) as exc:
        send(client, to="+15558880000")
    assert exc.value.code == 21610 and exc.value.status == 400
    assert send(client, to="+15558880000", from_="+15005550010").status == "queued"

    fake.inbound("+15558880000", SENDER, "start", url)
    assert send(client, to="+15558880000").status == "queued"


def test_inbound_via_messaging_service_marks_opt_out_and_fails_later_sends_async(
    fake, client, receiver
):
    url = f"{receiver.base_url}/twilio/inbound"
    fake.inbound("+15558880001", SENDER, " stop ", url, messaging_service_sid=MG_SID)
    assert receiver.wait_for(1)[0]["params"]["OptOutType"] == "STOP"
    msg = client.messages.create(
        to="+15558880001",
        messaging_service_sid=MG_SID,
        body="x",
        status_callback=f"{receiver.base_url}/s",
    )
    assert msg.status == "accepted"  # Messaging Service sends fail asynchronously
    fake.wait_idle()
    last = receiver.wait_for(3)[-1]["params"]
    assert (last["MessageStatus"], last["ErrorCode"]) == ("failed", "21610")


def test_inbound_twiml_reply_is_recorded(fake):
    twiml = b'<?xml version="1.0"?><Response><Message>You are unsubscribed.</Message></Response>'
    rec = Receiver(body=twiml, content_type="text/xml")
    try:
        assert fake.inbound("+15558880002", SENDER, "STOP", f"{rec.base_url}/in") == 200
    finally:
        rec.close()
    [reply] = [m for m in fake.messages if m["direction"] == "outbound-reply"]
    assert (reply["to"], reply["from"], reply["body"]) == (
        "+15558880002",
        SENDER,
        "You are unsubscribed.",
    )
    assert fake.inbound_log[0]["http_status"] == 200


def test_inbound_async_and_unreachable_url(fake, receiver):
    async def scenario() -> int:
        return await fake.inbound_async("+447700900123", SENDER, "hello", receiver.base_url)

    assert asyncio.run(scenario()) == 200
    assert receiver.wait_for(1)[0]["params"]["FromCountry"] == "GB"
    with pytest.raises(ConnectionError):
        fake.inbound("+15558880003", SENDER, "hi", f"http://127.0.0.1:{free_port()}/x")


# ------------------------------------------------------------------------------------ control
def test_control_api_over_http(fake):
    base = fake.base_url
    client = twilio_client_for(fake)
    status, _, _ = raw_request(f"{base}/_fake/faults", "POST")
    assert status == 400  # no JSON body

    def post_json(path: str, payload: Any) -> Any:
        req = urllib.request.Request(
            base + path,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    faults = post_json(
        "/_fake/faults",
        {
            "number_errors": {"+15550001000": 21610},
            "delivery_failures": {"+15550002000": {"code": 30003}},
            "fail_next": {"n": 1, "status": 503},
            "latency": 0.001,
        },
    )
    assert faults["number_errors"]["+15550001000"]["code"] == 21610
    assert faults["delivery_failures"]["+15550002000"] == {"code": 30003, "status": "undelivered"}
    with pytest.raises(TwilioRestException) as exc:
        send(client)
    assert exc.value.status == 503
    with pytest.raises(TwilioRestException) as exc:
        send(client, to="+15550001000")
    assert exc.value.code == 21610
    send(client, to="+15550002000")
    send(client, to="+15550002000")

    _, _, stats = raw_request(f"{base}/_fake/stats")
    assert stats["accepted"] == 2 and stats["by_to"] == {"+15550002000": 2}
    assert stats["rejected"] == 2 and stats["requests"] == 4
    _, _, listed = raw_request(f"{base}/_fake/messages?to=%2B15550002000")
    assert listed["count"] == 2 and listed["messages"][0]["status"] == "undelivered"

    added = post_json("/_fake/accounts", {"friendly_name": "added"})
    other = twilio_client_for(fake, added["account_sid"], added["auth_token"])
    assert other.api.v2010.accounts(added["account_sid"]).fetch().friendly_name == "added"

    assert post_json("/_fake/reset", {}) == {"ok": True}
    _, _, stats = raw_request(f"{base}/_fake/stats")
    assert stats["accepted"] == 0 and stats["by_to"] == {}
    assert fake.faults()["number_errors"] == {} and fake.messages == []
    assert added["account_sid"] not in fake.accounts


def test_reset_from_python_keeps_sids_unique(fake, client):
    first = send(client).sid
    fake.fail_next(5)
    fake.set_latency(0.01)
    fake.reset()
    assert fake.faults()["fail_next"] is None and fake.faults()["latency"] == 0
    assert fake.messages == [] and fake.stats()["requests"] == 0
    assert send(client).sid != first


@pytest.mark.parametrize(
    "argv", [["tests/fake_twilio.py"], ["-m", "tests.fake_twilio"]], ids=["script", "module"]
)
def test_separate_process_driven_by_control_api(argv, receiver):
    proc = subprocess.Popen(
        [sys.executable, *argv, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        remote = RemoteFakeTwilio(info["base_url"])
        assert (remote.account_sid, remote.auth_token) == (info["account_sid"], DEFAULT_AUTH_TOKEN)
        client = twilio_client_for(remote)
        send(client, to="+15556660000", status_callback=f"{receiver.base_url}/s")
        remote.fail_next(1, status=429)
        with pytest.raises(TwilioRestException) as exc:
            send(client)
        assert exc.value.code == 20429
        remote.set_number_error("+15556660001", 21408)
        with pytest.raises(TwilioRestException) as exc:
            send(client, to="+15556660001")
        assert exc.value.code == 21408
        assert remote.sent_to("+15556660000") == 1
        remote.wait_idle()
        assert [r["params"]["MessageStatus"] for r in receiver.wait_for(2)] == [
            "sent",
            "delivered",
        ]
        assert all(valid_signature(r, remote.auth_token) for r in receiver.requests)
        assert remote.inbound("+15556660002", SENDER, "STOP", f"{receiver.base_url}/in") == 200
        assert remote.stats()["inbound"] == 1
        remote.reset()
        assert remote.messages == [] and remote.faults()["number_errors"] == {}
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()


def test_spawned_process_helper():
    with RemoteFakeTwilio.spawn("--no-callbacks", "--seed", "7") as remote:
        assert remote.process is not None and remote.process.poll() is None
        client = twilio_client_for(remote)
        assert send(client, to="+15556660003").status == "queued"
        assert remote.sent_to("+15556660003") == 1
        proc = remote.process
    assert proc.poll() == 0
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{remote.base_url}/_fake/health", timeout=2)


# ------------------------------------------------------------------------------------ lifecycle
def test_independent_instances_and_clean_shutdown():
    def fake_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("FakeTwilio:")]

    before = len(fake_threads())
    a = FakeTwilio().start()
    b = FakeTwilio().start()
    try:
        assert a.port != b.port
        send(twilio_client_for(a), to="+15550000100")
        assert a.sent_to("+15550000100") == 1 and b.sent_to("+15550000100") == 0
        assert len(fake_threads()) == before + 2
    finally:
        a.stop()
        b.stop()
    assert len(fake_threads()) == before
    a.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{a.base_url}/_fake/health", timeout=2)


def test_stop_does_not_wait_for_hanging_requests():
    server = FakeTwilio().start()
    server.set_hang(30)
    client = twilio_client_for(server, timeout=0.2)
    with pytest.raises(requests.exceptions.Timeout):
        send(client)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert not server.running


def test_count_segments():
    assert count_segments("hi") == 1
    assert count_segments("x" * 160) == 1 and count_segments("x" * 161) == 2
    assert count_segments("x" * 306) == 2 and count_segments("x" * 307) == 3
    assert count_segments("[" * 80) == 1 and count_segments("[" * 81) == 2  # escapes = 2 septets
    assert count_segments("é" * 160) == 1  # é is GSM-7
    assert count_segments("ç" * 70) == 1 and count_segments("ç" * 71) == 2  # UCS-2
    assert count_segments("😀" * 35) == 1 and count_segments("😀" * 36) == 2  # surrogate pairs


# ------------------------------------------------------------------------------------ product
# This is the exact code recommended for the product (settings.TWILIO_API_BASE_URL).
TWILIO_DEFAULT_API_BASE_URL = "https://api.twilio.com"


def _use_base_url(client: Client, base_url: str | None) -> Client:
    base_url = (base_url or TWILIO_DEFAULT_API_BASE_URL).rstrip("/")
    if base_url != TWILIO_DEFAULT_API_BASE_URL:
        client.api.base_url = base_url  # api.twilio.com Domain: all 2010-04-01 resources + paging
        client.edge = client.region = None  # else TWILIO_EDGE/TWILIO_REGION rewrite the host
    return client


def make_twilio_client(sid: str, token: str, base_url: str, timeout: float = 10.0) -> Client:
    return _use_base_url(
        Client(sid, token, http_client=TwilioHttpClient(timeout=timeout)), base_url
    )


class _AsyncHttpClient(AsyncTwilioHttpClient):
    """twilio 9.x's AsyncTwilioHttpClient ignores its own ``timeout``; apply it."""

    async def request(
        self,
        method,
        url,
        params=None,
        data=None,
        headers=None,
        auth=None,
        timeout=None,
        allow_redirects=False,
    ):
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )


async def make_async_twilio_client(
    sid: str, token: str, base_url: str, timeout: float = 10.0
) -> Client:
    # Must run inside the event loop that will use it (aiohttp ClientSession);
    # close with: await client.http_client.close()
    return _use_base_url(
        Client(sid, token, http_client=_AsyncHttpClient(timeout=timeout)), base_url
    )


def test_product_snippet_sync_and_async(fake, monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")  # must not leak into the rewritten URL
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    client = make_twilio_client(fake.account_sid, fake.auth_token, fake.base_url + "/")
    for i in range(5):
        send(client, to="+15554440000", body=f"s{i}")
    assert len(client.messages.list(to="+15554440000", page_size=2)) == 5
    assert client.api.v2010.accounts(fake.account_sid).fetch().sid == fake.account_sid

    untouched = make_twilio_client("AC" + "0" * 32, "t", "https://api.twilio.com")
    assert untouched.api.base_url == "https://api.twilio.com"

    fake.set_hang(1.0, count=1)

    async def scenario() -> None:
        aclient = await make_async_twilio_client(
            fake.account_sid, fake.auth_token, fake.base_url, timeout=0.3
        )
        try:
            with pytest.raises(asyncio.TimeoutError):
                await aclient.messages.create_async(to="+15554440001", from_=SENDER, body="t")
            await aclient.messages.create_async(to="+15554440001", from_=SENDER, body="a")
            listed = await aclient.messages.list_async(to="+15554440000", page_size=2)
            assert len(listed) == 5
        finally:
            await aclient.http_client.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------ throughput
def test_throughput_smoke_async_500_messages_50_in_flight(fake, receiver):
    n, in_flight = 500, 50

    async def scenario() -> float:
        client = twilio_client_for(fake, async_=True)
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> str:
            async with sem:
                msg = await client.messages.create_async(
                    to=f"+1555{i % 50:07d}",
                    from_=SENDER,
                    body=f"Survey invite #{i}",
                    status_callback=f"{receiver.base_url}/s" if i % 10 == 0 else None,
                )
                return msg.sid

        try:
            started = time.perf_counter()
            sids = await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - started
        finally:
            await client.http_client.close()
        assert len(set(sids)) == n
        return elapsed

    elapsed = asyncio.run(scenario())
    stats = fake.stats()
    assert stats["accepted"] == n and stats["rejected"] == 0
    assert all(count == 10 for count in stats["by_to"].values())
    fake.wait_idle()
    assert len(receiver.wait_for(100)) == 100  # 50 messages with callbacks x (sent, delivered)
    print(f"\nfake twilio smoke: {n / elapsed:.0f} msg/s (async SDK, {in_flight} in flight)")
