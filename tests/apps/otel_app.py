"""A worker app instrumented with OpenTelemetry (tests/test_contrib_otel.py).

Its spans are exported as they end to the Redis list `spans:<queue>`, one JSON object
each, so the test process reads what any kind of worker process traced.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis
from ardiq import Ardiq, Retry, current_task
from ardiq.contrib.otel import instrument
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    priorities=["low", "default", "high"],
    poll_block_ms=200,
)
_redis = redis.Redis.from_url(app.redis_url)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests check of a finished span, as plain data."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
        "events": [e.name for e in span.events],
        "exceptions": [str((e.attributes or {}).get("exception.type")) for e in span.events],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "status": span.status.status_code.name,
    }


class RedisExporter(SpanProcessor):
    """Writes every finished span to Redis at once (no batching: the test waits on it)."""

    def on_end(self, span: ReadableSpan) -> None:
        _redis.rpush(f"spans:{app.queue_name}", json.dumps(span_record(span)))


class Broken(SpanProcessor):
    """A span processor that fails (ARDIQ_TEST_BROKEN_TRACING=start|end)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("broken span processor")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "end":
            raise RuntimeError("broken span processor")


class SlowStart(SpanProcessor):
    """Takes 0.1 s to start the span of `too_slow`'s attempt (an exporter doing I/O, say):
    that much of its 0.2 s timeout is gone before the tracing middleware's own code runs,
    so the middleware cannot tell the timeout by the attempt's age."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if getattr(span, "name", None) == "too_slow" and span.kind.name == "CONSUMER":
            time.sleep(0.1)


provider = TracerProvider()
provider.add_span_processor(RedisExporter())
provider.add_span_processor(SlowStart())
if broken := os.environ.get("ARDIQ_TEST_BROKEN_TRACING"):
    provider.add_span_processor(Broken(broken))
instrument(app, tracer_provider=provider, replay_after_s=1.0)
tracer = provider.get_tracer("tests.otel_app")


@app.task(max_retries=3, backoff_ms=20)
async def flaky(fail_times: int) -> str:
    """Fails its first `fail_times` attempts (one with `Retry`), then succeeds."""
    task = current_task()
    assert task is not None
    if task.tries == 1 and fail_times > 0:
        raise Retry("not yet", delay_ms=20)
    if task.tries <= fail_times:
        raise ValueError(f"attempt {task.tries} fails")
    return f"done after {task.tries}"


@app.task
def sync_child(x: int) -> int:
    """A sync body: the span it starts in its thread is the attempt's child."""
    with tracer.start_as_current_span("inside sync body"):
        return x * 2


@app.task(max_retries=0)
async def doomed() -> None:
    raise RuntimeError("always")


@app.task
async def plain(x: int) -> int:
    return x


@app.task
async def sleepy() -> None:
    _redis.rpush(f"started:{app.queue_name}", "sleepy")  # the body runs: abort it now
    await asyncio.sleep(30)


@app.task(timeout=0.2, max_retries=0)
async def too_slow() -> None:
    await asyncio.sleep(30)


if os.environ.get("ARDIQ_TEST_CRON") == "1":

    @app.cron(every=1)
    async def tick() -> str:
        return "tick"
