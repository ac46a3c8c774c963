"""The PostgreSQL backend (``config.postgresql``) health-checks a reused connection only after
it sat idle: a connection the server closed meanwhile is replaced before the request's first
query; a busy one costs no ``SELECT 1`` per request."""

from django.db import close_old_connections, connection, connections
from django.db.utils import Error as DatabaseError
from django.test.utils import CaptureQueriesContext

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the health check is the PostgreSQL backend's")


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate(pid: int) -> None:
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def test_a_connection_closed_by_the_server_while_idle_is_replaced():
    pid = backend_pid()
    terminate(pid)
    connection.used_at -= 5  # the last request ended five seconds ago
    close_old_connections()  # a request starts

    assert backend_pid() != pid  # no error: the check found it dead and reconnected


def test_a_busy_connection_is_not_checked_and_recovers_after_one_failed_request():
    backend_pid()
    close_old_connections()  # the next request starts at once
    is_usable = []
    original = connection.is_usable
    connection.is_usable = lambda: is_usable.append(1) or original()
    try:
        with CaptureQueriesContext(connection):
            pid = backend_pid()
        assert not is_usable  # no SELECT 1 on a connection used a moment ago

        terminate(pid)
        close_old_connections()
        with pytest.raises(DatabaseError):
            backend_pid()  # the request that was running when the server went away fails
        close_old_connections()  # its end closes the broken connection

        assert backend_pid() != pid  # the next request has a new one
    finally:
        del connection.is_usable
