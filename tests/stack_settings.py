"""Settings shared by the stack fixtures and the tests that use them."""

#: Redis database of Celery's own `celery_app` fixture in stack tests, which
#: is session-scoped and so cannot take a per-test database.
CELERY_FIXTURE_DATABASE = 15
