"""ArdiQ as the backend of Django's task framework (``pip install "ardiq[django]"``).

``ArdiqBackend`` goes in ``settings.TASKS``; ``ardiq run ardiq.contrib.django:app`` (with
``DJANGO_SETTINGS_MODULE`` set) is the worker that runs the tasks. See the README,
"Django".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend import ArdiqBackend

if TYPE_CHECKING:
    from ardiq import Ardiq

    app: Ardiq

__all__ = ["ArdiqBackend", "app"]


def __getattr__(name: str) -> Any:
    # `app` is built on first access, not at import: building it sets Django up, and the
    # settings module imports this package (for ArdiqBackend) long before that is allowed.
    if name == "app":
        from .worker import worker_app

        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
