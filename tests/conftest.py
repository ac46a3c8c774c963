"""Shared fixtures: two brands by default, API clients, a real Celery worker, a real browser."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from rest_framework.test import APIClient

import pytest
from hypothesis import HealthCheck, settings

from brands.roles import Role
from tests.factories.brands import ApiKeyFactory, BrandFactory, MembershipFactory, UserFactory
from tests.factories.participants import ParticipantFactory
from tests.factories.projects import ProjectFactory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests check behaviour, not speed: no per-example deadline (the suite shares a small
# machine with workers and browsers, where a slow example is not a wrong one).
settings.register_profile("relay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("relay")


# --- No real network: anything but loopback or a unix socket fails the test. -----------------
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # unix socket path
        return True
    host = address[0]
    if host in ("localhost", "testserver"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
        raise RuntimeError(f"Tests may not reach the network: connect to {address!r} refused")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
        raise RuntimeError(f"Tests may not reach the network: connect to {address!r} refused")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


# --- Tenancy: every test gets two brands. -------------------------------------------------------
@dataclass
class Tenancy:
    brand_a: object
    brand_b: object
    admin_a: object
    project_admin_a: object
    viewer_a: object
    admin_b: object
    project_a: object
    project_b: object
    participant_a: object
    participant_b: object

    def user_for(self, role: str):
        return {
            Role.BRAND_ADMIN: self.admin_a,
            Role.PROJECT_ADMIN: self.project_admin_a,
            Role.VIEWER: self.viewer_a,
        }[role]


@pytest.fixture
def tenancy(db) -> Tenancy:
    brand_a = BrandFactory(name="Alpha", slug="alpha")
    brand_b = BrandFactory(name="Beta", slug="beta")
    admin_a = MembershipFactory(brand=brand_a, role=Role.BRAND_ADMIN, user__username="admin_a").user
    project_admin_a = MembershipFactory(
        brand=brand_a, role=Role.PROJECT_ADMIN, user__username="padmin_a"
    ).user
    viewer_a = MembershipFactory(brand=brand_a, role=Role.VIEWER, user__username="viewer_a").user
    admin_b = MembershipFactory(brand=brand_b, role=Role.BRAND_ADMIN, user__username="admin_b").user
    project_a = ProjectFactory(brand=brand_a, name="Alpha pulse")
    project_b = ProjectFactory(brand=brand_b, name="Beta pulse")
    return Tenancy(
        brand_a=brand_a,
        brand_b=brand_b,
        admin_a=admin_a,
        project_admin_a=project_admin_a,
        viewer_a=viewer_a,
        admin_b=admin_b,
        project_a=project_a,
        project_b=project_b,
        participant_a=ParticipantFactory(project=project_a),
        participant_b=ParticipantFactory(project=project_b),
    )


def make_api_client(*, user=None, api_key=None) -> APIClient:
    client = APIClient()
    if api_key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.plain_key}")
    elif user is not None:
        client.force_authenticate(user=user)
    return client


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Each test starts with nothing cached by the process: key lookups (brands.services),
    transactional distributions (transactional.services), the inbound webhook's accounts
    (distributions.selectors), the replies' kick (core.flags). A rolled-back test's pks are
    reused by the next one on SQLite."""
    from brands.services import api_key_cache_forget
    from conversations.replies import KICK_FLAG, replies_kick_forget
    from core.flags import flag_clear
    from distributions.selectors import inbound_accounts_forget
    from transactional.services import transactional_distribution_cache_clear

    api_key_cache_forget()
    transactional_distribution_cache_clear()
    inbound_accounts_forget()
    flag_clear(KICK_FLAG)  # a kick a test left standing (its task never ran) is not the next's
    replies_kick_forget()
    yield
    api_key_cache_forget()
    transactional_distribution_cache_clear()
    inbound_accounts_forget()


@pytest.fixture
def api_client_for():
    return make_api_client


@pytest.fixture
def key_a(tenancy):
    return ApiKeyFactory(brand=tenancy.brand_a, role=Role.PROJECT_ADMIN)


@pytest.fixture
def api_a(key_a) -> APIClient:
    return make_api_client(api_key=key_a)


@pytest.fixture
def page_client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def user_factory():
    return UserFactory


# Real worker processes (integration): ``start_worker`` lives in tests/workers.py.
from tests.workers import start_worker  # noqa: E402, F401


@pytest.fixture
def eager_tasks():
    """Run Celery tasks inline (unit tests). Integration tests use real workers instead."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False


from tests.browser import browser, page  # noqa: E402, F401


@pytest.fixture
def client(client):
    """Django's test client, whose handler takes provider callbacks through the short chain
    as ``config.wsgi.application`` does (``config.handlers``): every other request is
    handled exactly as before."""
    from django.test.client import ClientHandler

    from config.handlers import CallbackShortcut

    class Handler(CallbackShortcut, ClientHandler):
        pass

    client.handler = Handler(client.handler.enforce_csrf_checks)
    return client


@pytest.fixture
def wsgi_in_test_transaction():
    """The WSGI handler closes "old" connections around each request, which would close the
    test's own (inside its transaction): Django's test client switches that off the same way."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
