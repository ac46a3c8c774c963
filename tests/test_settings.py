"""Settings come from the environment; the development secret key is refused without DEBUG."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('ok')"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_development_secret_key_is_refused_when_debug_is_off():
    result = load_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is the development key while DEBUG is off" in result.stderr


def test_missing_encryption_key_is_refused_when_debug_is_off():
    result = load_settings(DEBUG="false", SECRET_KEY="a-real-production-secret-0123456789")
    assert result.returncode != 0
    assert "RELAY_ENCRYPTION_KEYS is not set" in result.stderr


def test_production_settings_load_with_real_secrets():
    from cryptography.fernet import Fernet

    result = load_settings(
        DEBUG="false",
        SECRET_KEY="a-real-production-secret-0123456789",
        RELAY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_development_defaults_need_no_services():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import django; django.setup(); from django.conf import settings as s; "
                "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, "
                "s.RELAY_DEFAULT_SMS_PROVIDER)"
            ),
        ],
        cwd=ROOT,
        env={
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG")
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "outbox"]


PRODUCTION_PROBE = """
import django
django.setup()
from django.test import Client
client = Client()
for host, path, proto in [
    ("127.0.0.1:8000", "/healthz/", None),  # the image's HEALTHCHECK
    ("relay.example.com", "/api/v1/projects/", None),  # plain http to the public host
    ("relay.example.com", "/api/v1/projects/", "https"),  # through the TLS proxy
    ("127.0.0.1:8000", "/api/v1/projects/", "https"),  # a host that is not allowed
]:
    extra = {"HTTP_X_FORWARDED_PROTO": proto} if proto else {}
    response = client.get(path, HTTP_HOST=host, **extra)
    hsts = response.get("Strict-Transport-Security", "-")
    print(response.status_code, response.get("Location", "-"), hsts)
"""


def production_answers(tmp_path, **env):
    from cryptography.fernet import Fernet

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SECURE_"))}
    result = subprocess.run(
        [sys.executable, "-c", PRODUCTION_PROBE],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": "a-real-production-secret-0123456789",
            "RELAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RELAY_VAR_DIR": str(tmp_path),
            "ALLOWED_HOSTS": "relay.example.com",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    ("public_url", "plain", "proxied"),
    [
        # Over https: plain http is redirected, and HSTS sent through the proxy.
        (
            "https://relay.example.com",
            "301 https://relay.example.com/api/v1/projects/ -",
            "401 - max-age=31536000",
        ),
        # docker-compose's default (http://localhost:8000): a redirect would lead nowhere.
        ("http://relay.example.com", "401 - -", "401 - -"),
    ],
)
def test_production_redirects_and_hsts_follow_the_public_url_and_spare_the_health_check(
    tmp_path, public_url, plain, proxied
):
    answers = production_answers(tmp_path, PUBLIC_BASE_URL=public_url)
    # The container's probe: neither an allowed host nor https, answered all the same.
    assert answers[0].startswith("200 ")
    assert answers[1:3] == [plain, proxied]
    assert answers[3].startswith("400 ")  # a host that is not allowed
