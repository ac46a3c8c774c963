"""Every lock the participants app takes, in one place (see STYLE.md, "Locks and money")."""

from __future__ import annotations

from django.db import connection

# High half of the advisory-lock key: "directory writes of brand <low half>".
DIRECTORY_LOCK_NAMESPACE = 0x5245_4C01


def lock_brand_directory(*, brand_id: int) -> None:
    """Serialise bulk writers of one brand's directory until the current transaction ends.

    Two imports into one brand would otherwise race on the same PersonIDs. PostgreSQL takes a
    transaction-scoped advisory lock (no row of another app is locked); SQLite needs nothing,
    because its IMMEDIATE transactions already admit one writer at a time.
    """
    if connection.vendor == "postgresql":
        key = (DIRECTORY_LOCK_NAMESPACE << 32) | (int(brand_id) & 0xFFFF_FFFF)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
