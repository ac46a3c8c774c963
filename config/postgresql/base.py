"""Django's PostgreSQL backend, with its per-request health check made for idle connections.

``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every request that reuses a
connection: a round trip on every API call, there to find a connection the server closed
while it sat unused (a restart, an idle timeout, a failover). A connection used less than
``HEALTH_CHECK_AFTER_IDLE`` seconds ago skips it. If the server goes away between two busy
requests, the next one fails as it would have had it been running, and Django closes the
broken connection when that request ends (``errors_occurred``): the one after reconnects.
"""

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_AFTER_IDLE = 1.0  # seconds


class DatabaseWrapper(base.DatabaseWrapper):
    used_at = float("-inf")  # monotonic time of the last cursor made

    def close_if_health_check_failed(self):
        now = time.monotonic()
        recent = now - self.used_at < HEALTH_CHECK_AFTER_IDLE
        self.used_at = now
        if recent and self.connection is not None:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
