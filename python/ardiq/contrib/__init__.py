"""Optional integrations with other frameworks (ASGI, OpenTelemetry).

Nothing here is imported by ``import ardiq``: each module is imported only by code that
uses it, and needs only the extra it names (``ardiq.contrib.otel`` needs ``ardiq[otel]``;
``ardiq.contrib.asgi`` needs nothing beyond ArdiQ itself).
"""
