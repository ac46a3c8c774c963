"""What every benchmark needs: a fresh PostgreSQL database of its own, and Celery workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def recreate_database(name: str, template: str | None = None) -> str:
    """Drop and create database ``name`` on the local server (empty, or a copy of database
    ``template``); return its URL."""
    import psycopg2

    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        copy = f' TEMPLATE "{template}"' if template else ""
        cursor.execute(f'CREATE DATABASE "{name}"{copy}')
    admin.close()
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def celery_worker(
    *, env: dict, concurrency: int, name: str, queues: str | None = None
) -> subprocess.Popen:
    """A prefork Celery worker of the project in its own process group (stopped with
    ``os.killpg``), as production runs it: quiet log, no gossip, mingle or heartbeat.
    ``queues``: the queues it consumes (comma-separated), all of them when None."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "WARNING"]
    command += ["-c", str(concurrency), "-n", name]
    if queues:
        command += ["-Q", queues]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
