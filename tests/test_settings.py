"""Settings come from the environment; the development secret key is refused without DEBUG."""

import os
import subprocess
import sys
from pathlib import Path

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
