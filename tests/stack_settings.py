"""Settings shared by the stack fixtures and the tests that use them."""

import redis

#: Redis database of Celery's own `celery_app` fixture in stack tests, which
#: is session-scoped and so cannot take a per-test database.
CELERY_FIXTURE_DATABASE = 15

#: Databases handed to tests and benchmarks in turn: 1 to 14. Database 0 is
#: left to the demo, and 15 to Celery's fixture.
_FIRST_TEST_DATABASE = 1
_TEST_DATABASES = CELERY_FIXTURE_DATABASE - _FIRST_TEST_DATABASE
_COUNTER_KEY = "pod-monitor:tests:next-database"


def claim_redis_database(port: int) -> int:
    """Return the next Redis database for a test, counted in Redis itself.

    The counter lives in database 0 of the server, so pytest sessions that
    run at the same time on one stack take different databases, until 14
    are in use at once.
    """
    client = redis.Redis(host="127.0.0.1", port=port, db=0)
    try:
        count = int(client.incr(_COUNTER_KEY))
    finally:
        client.close()
    return _FIRST_TEST_DATABASE + count % _TEST_DATABASES
