"""Settings of the test project. The Redis URL, the queue prefix and the database file come
from the environment, so the test process and its worker processes agree."""

from __future__ import annotations

import os

SECRET_KEY = "ardiq-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["djapp"]
ROOT_URLCONF = "djproject.urls"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ARDIQ_DJANGO_DB", ":memory:"),
        # Closed at the end of each request (and, in a worker, of each task).
        "CONN_MAX_AGE": 0,
    }
}

# No `redis_url`: ArdiQ reads ARDIQ_REDIS_URL, which the native worker keeps out of
# os.environ (task code never sees it) and hands to the package directly.
_prefix = os.environ.get("ARDIQ_DJANGO_PREFIX", "dj-")
_common = {"poll_block_ms": 200}
TASKS = {
    "default": {
        "BACKEND": "ardiq.contrib.django.ArdiqBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {**_common, "queue_prefix": _prefix, "result_ttl_ms": 600_000},
    },
    # Retries on, as a project would configure them (Django has none by default).
    "retrying": {
        "BACKEND": "ardiq.contrib.django.ArdiqBackend",
        "OPTIONS": {**_common, "queue_prefix": _prefix + "r-", "max_retries": 2, "backoff_ms": 50},
    },
    # Attempts bounded in time, results kept briefly.
    "strict": {
        "BACKEND": "ardiq.contrib.django.ArdiqBackend",
        "OPTIONS": {
            **_common,
            "queue_prefix": _prefix + "s-",
            "timeout": 0.5,
            "result_ttl_ms": 1500,
        },
    },
    "oncommit": {
        "BACKEND": "ardiq.contrib.django.ArdiqBackend",
        "ENQUEUE_ON_COMMIT": True,
        "OPTIONS": {**_common, "queue_prefix": _prefix + "c-"},
    },
}
