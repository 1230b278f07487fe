"""Optional integrations with other frameworks (Django, ASGI, OpenTelemetry).

Nothing here is imported by ``import ardiq``: each module is imported only by code that
uses it, and needs only the extra it names (``ardiq.contrib.django`` needs
``ardiq[django]``, ``ardiq.contrib.otel`` needs ``ardiq[otel]``; ``ardiq.contrib.asgi``
needs nothing beyond ArdiQ itself).
"""
