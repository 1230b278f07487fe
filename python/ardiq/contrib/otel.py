"""OpenTelemetry tracing for an ArdiQ app: ``instrument(app)`` (needs ``ardiq[otel]``).

Call it once on the app, in the producers and in the worker's module alike:

- every enqueue gets a PRODUCER span (``<task> enqueue``) whose context travels in the
  task's headers (W3C ``traceparent``/``tracestate``, 55 bytes for most traces, at most
  ``MAX_HEADER_CHARS`` a value);
- every attempt the worker runs gets a CONSUMER span named after the task, the child of
  that context. A cron occurrence, or a dead letter replayed, starts a trace of its own,
  linked to the carried context when there is one. Attributes: ``ardiq.queue``,
  ``ardiq.lane``, ``ardiq.task_id``, ``ardiq.attempt`` and ``ardiq.outcome`` (``ok``,
  ``retry``, ``fail`` or ``abort``); a failed attempt records its exception.

The span is the current one while the body runs, sync bodies in their thread included,
so spans the task starts are its children. Headers a task arrives with are untrusted: a
malformed or oversized ``traceparent`` is ignored (the attempt gets a root span) and
never fails the task. An app that is not instrumented imports and runs none of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..context import EnqueueContext, TaskContext
from ..errors import Retry
from ..runtime import timed_out

if TYPE_CHECKING:
    from ..app import Ardiq

__all__ = ["MAX_HEADER_CHARS", "SENT_HEADER", "instrument"]

MAX_HEADER_CHARS = 512
"""A propagated value longer than this is neither sent nor read (W3C caps tracestate at
512 characters; a traceparent is 55)."""

SENT_HEADER = "ardiq-sent-ms"
"""The producer's clock at enqueue (epoch ms): how a worker tells a replayed dead letter
(enqueued again long after its context was carried) from the original."""

_SCOPE = "ardiq.contrib.otel"
log = logging.getLogger("ardiq")
_instrumented: weakref.WeakSet[Ardiq] = weakref.WeakSet()


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a task's headers, which come from whoever wrote the task: only short strings
    are seen."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, str) and len(value) <= MAX_HEADER_CHARS:
            return [value]
        return None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k for k in carrier if isinstance(k, str)]


_GETTER = _HeaderGetter()


def instrument(
    app: Ardiq,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
    replay_after_s: float = 60.0,
) -> None:
    """Trace `app`'s enqueues and task attempts (see the module's docstring).

    `tracer_provider`: default the global one. `propagator`: what goes into the headers,
    default W3C trace context only (not the global propagator: baggage can be large, and
    it would travel with every task). `replay_after_s`: a task whose carried context was
    sent this long before Redis enqueued it is a replay (clocks of producers and Redis
    must agree that well). Instrumenting an app twice changes nothing."""
    if app in _instrumented:
        return
    _instrumented.add(app)
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    prop: TextMapPropagator = propagator or TraceContextTextMapPropagator()
    replay_after_ms = int(replay_after_s * 1000)
    queue = app.queue_name

    def on_enqueue(ctx: EnqueueContext) -> None:
        try:
            span = tracer.start_span(
                f"{ctx.name} enqueue",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "ardiq",
                    "messaging.operation.type": "create",
                    "messaging.destination.name": queue,
                    "messaging.message.id": ctx.task_id,
                    "ardiq.queue": queue,
                    "ardiq.task_id": ctx.task_id,
                    "ardiq.task": ctx.name,
                },
            )
        except Exception as exc:
            _broken("enqueue", ctx.name, exc)
            return
        try:
            carrier: dict[str, str] = {}
            prop.inject(carrier, context=trace.set_span_in_context(span))
            for key, value in carrier.items():
                if isinstance(value, str) and len(value) <= MAX_HEADER_CHARS:
                    ctx.headers[key] = value
            ctx.headers[SENT_HEADER] = str(time.time_ns() // 1_000_000)
        except Exception as exc:
            _broken("enqueue", ctx.name, exc)
        finally:
            _end(span, ctx.name)

    async def middleware(ctx: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        task = app._tasks.get(ctx.name)
        try:
            parent, links = _parent(ctx, prop, replay_after_ms, ctx.name in app._crons)
            span = tracer.start_span(
                ctx.name,
                context=parent,
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": "ardiq",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": queue,
                    "messaging.message.id": ctx.task_id,
                    "ardiq.queue": queue,
                    "ardiq.lane": ctx.lane,
                    "ardiq.task_id": ctx.task_id,
                    "ardiq.attempt": ctx.tries,
                },
            )
        except Exception as exc:
            # Tracing that fails (an exporter's span processor, say) never fails a task.
            _broken("attempt", ctx.name, exc)
            return await call_next()
        will_retry = task is not None and ctx.tries <= task.max_retries
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                value = await call_next()
        except asyncio.CancelledError:
            timeout = task.timeout if task is not None else None
            if timeout is not None and timed_out():
                # The attempt's timeout cancelled it: the runtime fails it with this.
                _failed(span, TimeoutError(f"timed out after {timeout}s"), will_retry)
            else:
                span.set_attribute("ardiq.outcome", "abort")
            raise
        except Exception as exc:
            _failed(span, exc, will_retry)
            raise
        else:
            span.set_attribute("ardiq.outcome", "ok")
            return value
        finally:
            _end(span, ctx.name)

    app.on_enqueue(on_enqueue)
    # Outermost, whenever it is called: the span covers the app's own middleware too.
    app._middleware.insert(0, middleware)


def _parent(
    ctx: TaskContext, prop: TextMapPropagator, replay_after_ms: int, cron: bool
) -> tuple[otel_context.Context, list[Link]]:
    """The context an attempt's span starts in and its links: the carried context as the
    parent, or (cron, replay) a fresh trace linked to it. Never raises."""
    empty = otel_context.Context()
    headers = ctx.headers
    if not headers:
        return empty, []
    try:
        carried = prop.extract(headers, context=empty, getter=_GETTER)
        remote = trace.get_current_span(carried).get_span_context()
    except Exception:
        return empty, []
    if not remote.is_valid:
        return empty, []
    if cron or _replayed(headers.get(SENT_HEADER), ctx.enqueue_ms, replay_after_ms):
        return empty, [Link(remote, {"ardiq.link": "cron" if cron else "replay"})]
    return carried, []


def _replayed(sent: object, enqueue_ms: int, replay_after_ms: int) -> bool:
    if not isinstance(sent, str) or not enqueue_ms or len(sent) > 20:
        return False
    try:
        return enqueue_ms - int(sent) > replay_after_ms
    except ValueError:
        return False


def _failed(span: trace.Span, exc: BaseException, will_retry: bool) -> None:
    span.set_attribute("ardiq.outcome", "retry" if will_retry else "fail")
    span.record_exception(exc)
    if not (will_retry and isinstance(exc, Retry)):
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _end(span: trace.Span, name: str) -> None:
    """End `span`; span processors run here, and one that raises is logged, not raised."""
    try:
        span.end()
    except Exception as exc:
        _broken("span end", name, exc)


def _broken(where: str, name: str, exc: Exception) -> None:
    log.warning("tracing failed (ignored) at=%s name=%s error=%s", where, name, type(exc).__name__)
