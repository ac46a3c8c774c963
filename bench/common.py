"""What every benchmark needs: a fresh PostgreSQL database of its own."""

from __future__ import annotations

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def recreate_database(name: str) -> str:
    """Drop and create database ``name`` on the local server; return its URL."""
    import psycopg2

    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return f"postgres://postgres@127.0.0.1:5432/{name}"
