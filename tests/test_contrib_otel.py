"""OpenTelemetry: one trace from the enqueuing code through every attempt of a task, on
every worker kind (the worker app, tests/apps/otel_app.py, exports its spans to Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from apps.otel_app import span_record
from ardiq import Ardiq
from ardiq.context import EnqueueContext
from ardiq.contrib.otel import instrument
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.workers import WorkerProcess


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


async def worker_spans(
    redis_url: str, queue: str, count: int, name: str | None = None, timeout: float = 30
) -> list[dict[str, Any]]:
    """The spans the worker exported (named `name`, if given), once there are `count`."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await client.lrange(f"spans:{queue}", 0, -1)
                spans = [json.loads(r) for r in raw]
                spans = [s for s in spans if name is None or s["name"] == name]
                if len(spans) >= count:
                    return spans
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_one_trace_from_request_through_retries_to_result(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    redis_url: str,
    queue: str,
) -> None:
    provider, memory = exporter
    producer = make_app(priorities=["low", "default", "high"])
    instrument(producer, tracer_provider=provider)
    start_worker("apps.otel_app:app")
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("POST /orders") as request:
        job = await producer.ref("flaky", priority="high").enqueue(3)
        result = await job.result(timeout=60)
    assert result is not None and result.success, result
    assert result.value == "done after 4"

    local = [span_record(s) for s in memory.get_finished_spans()]
    (enqueue,) = [s for s in local if s["name"] == "flaky enqueue"]
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert enqueue["trace_id"] == trace_id
    assert enqueue["parent"] == f"{request.get_span_context().span_id:016x}"
    assert enqueue["kind"] == "PRODUCER"

    attempts = sorted(
        await worker_spans(redis_url, queue, 4), key=lambda s: s["attributes"]["ardiq.attempt"]
    )
    assert [s["attributes"]["ardiq.attempt"] for s in attempts] == [1, 2, 3, 4]
    for span in attempts:
        assert span["name"] == "flaky"
        assert span["kind"] == "CONSUMER"
        assert span["trace_id"] == trace_id
        assert span["parent"] == enqueue["span_id"]
        assert span["links"] == []
        attrs = span["attributes"]
        assert attrs["ardiq.queue"] == queue
        assert attrs["ardiq.lane"] == "high"
        assert attrs["ardiq.task_id"] == job.id
    assert [s["attributes"]["ardiq.outcome"] for s in attempts] == ["retry", "retry", "retry", "ok"]
    assert attempts[0]["exceptions"][0].endswith("Retry")
    assert attempts[1]["exceptions"][0].endswith("ValueError")
    assert attempts[2]["exceptions"][0].endswith("ValueError")
    assert attempts[3]["exceptions"] == []
    assert [s["status"] for s in attempts] == ["UNSET", "ERROR", "ERROR", "UNSET"]


async def test_sync_body_runs_in_the_attempts_span(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    redis_url: str,
    queue: str,
) -> None:
    """The span is current in a sync body's thread: spans it starts are its children."""
    provider, _ = exporter
    producer = make_app(priorities=["low", "default", "high"])
    instrument(producer, tracer_provider=provider)
    start_worker("apps.otel_app:app")
    job = await producer.ref("sync_child").enqueue(21)
    result = await job.result(timeout=60)
    assert result is not None and result.value == 42
    (inner,) = await worker_spans(redis_url, queue, 1, "inside sync body")
    (attempt,) = await worker_spans(redis_url, queue, 1, "sync_child")
    assert inner["parent"] == attempt["span_id"]
    assert inner["trace_id"] == attempt["trace_id"]
    assert attempt["attributes"]["ardiq.outcome"] == "ok"
    assert attempt["attributes"]["ardiq.lane"] == "default"


BAD_HEADERS: list[dict[str, Any]] = [
    {"traceparent": "garbage"},
    {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # all-zero ids: invalid
    {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 100_000},
    {"traceparent": 12345, "tracestate": ["not", "text"]},
    {"traceparent": {"nested": "map"}, "ardiq-sent-ms": "soon"},
    {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},  # forbidden version
]


async def test_malformed_trace_headers_never_fail_a_task(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    """Headers are written by whoever wrote the task: nonsense in them gives the attempt a
    root span, and the task runs as if they were not there."""
    producer = make_app(priorities=["low", "default", "high"])
    bad = iter(BAD_HEADERS)

    @producer.on_enqueue
    def forge(ctx: EnqueueContext) -> None:
        ctx.headers.update(next(bad))

    start_worker("apps.otel_app:app")
    jobs = [await producer.ref("plain").enqueue(i) for i in range(len(BAD_HEADERS))]
    for i, job in enumerate(jobs):
        result = await job.result(timeout=60)
        assert result is not None and result.success and result.value == i, result
    spans = await worker_spans(redis_url, queue, len(jobs), "plain")
    assert len({s["trace_id"] for s in spans}) == len(jobs)
    for span in spans:
        assert span["parent"] is None and span["links"] == []
        assert span["attributes"]["ardiq.outcome"] == "ok"


async def test_a_replayed_dead_letter_links_to_its_first_trace(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    exporter: tuple[TracerProvider, InMemorySpanExporter],
    redis_url: str,
    queue: str,
) -> None:
    provider, memory = exporter
    producer = make_app(priorities=["low", "default", "high"])
    instrument(producer, tracer_provider=provider)
    start_worker("apps.otel_app:app")
    job = await producer.ref("doomed").enqueue()
    first = await job.result(timeout=60)
    assert first is not None and not first.success
    (enqueue,) = [span_record(s) for s in memory.get_finished_spans()]
    (failed,) = await worker_spans(redis_url, queue, 1, "doomed")
    assert failed["parent"] == enqueue["span_id"]
    assert failed["attributes"]["ardiq.outcome"] == "fail"
    assert failed["status"] == "ERROR"
    assert len(failed["exceptions"]) == 1
    assert failed["exceptions"][0].endswith("RuntimeError")
    # The worker app counts a context sent over a second before Redis enqueued the task
    # as a replay's.
    await asyncio.sleep(1.3)
    assert await producer.replay(job.id) is not None
    again = await job.result(timeout=60)
    assert again is not None and not again.success
    spans = await worker_spans(redis_url, queue, 2, "doomed")
    (replayed,) = [s for s in spans if s["span_id"] != failed["span_id"]]
    assert replayed["parent"] is None
    assert replayed["trace_id"] != enqueue["trace_id"]
    assert replayed["links"] == [
        {
            "trace_id": enqueue["trace_id"],
            "span_id": enqueue["span_id"],
            "attributes": {"ardiq.link": "replay"},
        }
    ]


async def test_a_timed_out_attempt_fails_its_span(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    producer = make_app(priorities=["low", "default", "high"])
    start_worker("apps.otel_app:app")
    job = await producer.ref("too_slow").enqueue()
    result = await job.result(timeout=60)
    assert result is not None and not result.success
    (span,) = await worker_spans(redis_url, queue, 1, "too_slow")
    assert span["attributes"]["ardiq.outcome"] == "fail"
    assert span["exceptions"][0].endswith("TimeoutError")
    assert span["status"] == "ERROR"


async def test_an_aborted_attempt_says_so(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    producer = make_app(priorities=["low", "default", "high"])
    start_worker("apps.otel_app:app")
    job = await producer.ref("sleepy").enqueue()
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.blpop([f"started:{queue}"], timeout=30) is not None
    finally:
        await client.aclose()
    assert await job.abort()
    result = await job.result(timeout=30)
    assert result is not None and result.aborted
    (span,) = await worker_spans(redis_url, queue, 1, "sleepy")
    assert span["attributes"]["ardiq.outcome"] == "abort"
    assert span["exceptions"] == []


@pytest.mark.parametrize("where", ["start", "end"])
async def test_broken_tracing_never_fails_a_task(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    where: str,
) -> None:
    """A span processor that raises, in the producer or the worker, is logged and
    ignored: the enqueue and the task go on."""

    class Broken(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if where == "start":
                raise RuntimeError("broken span processor")

        def on_end(self, span: ReadableSpan) -> None:
            if where == "end":
                raise RuntimeError("broken span processor")

    provider = TracerProvider()
    provider.add_span_processor(Broken())
    producer = make_app(priorities=["low", "default", "high"])
    instrument(producer, tracer_provider=provider)
    worker = start_worker("apps.otel_app:app", env={"ARDIQ_TEST_BROKEN_TRACING": where})
    for name, args in (("plain", (7,)), ("flaky", (1,))):
        result = await (await producer.ref(name).enqueue(*args)).result(timeout=60)
        assert result is not None and result.success, result
    assert "tracing failed (ignored)" in worker.output()


async def test_cron_occurrences_start_traces_of_their_own(
    start_worker: Callable[..., WorkerProcess], redis_url: str, queue: str
) -> None:
    start_worker("apps.otel_app:app", env={"ARDIQ_TEST_CRON": "1"})
    spans = await worker_spans(redis_url, queue, 2, "tick")
    assert len({s["trace_id"] for s in spans}) == len(spans)
    for span in spans:
        assert span["parent"] is None and span["links"] == []
        assert span["attributes"]["ardiq.outcome"] == "ok"
        assert span["attributes"]["ardiq.attempt"] == 1


async def test_headers_are_small_and_only_when_instrumented(
    make_app: Callable[..., Ardiq], exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Uninstrumented, a task carries no headers at all; instrumented, about 70 bytes."""
    provider, _ = exporter
    app = make_app()
    seen: list[dict[str, str]] = []

    @app.task
    async def noop() -> None:
        return None

    @app.on_enqueue
    def capture(ctx: EnqueueContext) -> None:
        seen.append(ctx.headers)  # as every hook left it

    from ardiq.testing import inline

    async with inline(app):
        await noop.enqueue()
        instrument(app, tracer_provider=provider)
        instrument(app, tracer_provider=provider)  # twice: changes nothing
        with provider.get_tracer("test").start_as_current_span("caller"):
            await noop.enqueue()
    assert seen[0] == {}
    assert set(seen[1]) == {"traceparent", "ardiq-sent-ms"}
    assert sum(len(k) + len(v) for k, v in seen[1].items()) < 100
    assert len(app._middleware) == 1 and len(app._enqueue_hooks) == 2
