"""Producer-side operations on Redis: enqueue, results, status, abort, dead letters.

Every state change goes through a protocol script (PROTOCOL.md); this module only builds
their KEYS and ARGV and decodes their replies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped,unused-ignore]

from .broker import translate_errors
from .errors import BrokerError
from .jobs import Attempt, DeadLetter, HistoryEntry, Status, TaskInfo, decode_payload
from .serializers import Deserializer


def text(raw: bytes) -> str:
    """Bytes from Redis as text: not trusted to be UTF-8 (shown with replacement marks)."""
    return bytes(raw).decode("utf-8", "replace")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _int(raw: object) -> int:
    """A number written by a script (or 0 when it is not one)."""
    if isinstance(raw, int | float | str | bytes):
        try:
            return int(raw)
        except (ValueError, OverflowError):
            return 0
    return 0


def decode_attempt(raw: bytes) -> Attempt | None:
    """One `P attempts:<id>` record (JSON, PROTOCOL.md History); None when unreadable."""
    try:
        rec = json.loads(text(raw))
        if not isinstance(rec, dict):
            return None
        return Attempt(
            tries=_int(rec.get("n")),
            kind=str(rec.get("k", "")),
            worker=str(rec.get("w", "")),
            started_ms=_int(rec.get("st")),
            finished_ms=_int(rec.get("fin")),
            error=str(rec.get("err", "")),
        )
    except ValueError:
        return None


def decode_history(fields: dict[bytes, bytes]) -> HistoryEntry:
    """One `P history` entry (PROTOCOL.md History)."""
    kind = text(fields.get(b"k", b""))
    err = fields.get(b"err")
    return HistoryEntry(
        task_id=text(fields.get(b"id", b"")),
        fn_name=text(fields.get(b"fn", b"")),
        priority=text(fields.get(b"l", b"")),
        kind=kind,
        tries=_int(fields.get(b"t")),
        enqueued_ms=_int(fields.get(b"enq")),
        started_ms=_int(fields.get(b"st")),
        finished_ms=_int(fields.get(b"fin")),
        worker=text(fields.get(b"w", b"")),
        error=None if err is None else text(err),
    )


# Entries read per XREVRANGE while `history(kind=...)` filters.
HISTORY_PAGE = 500


if TYPE_CHECKING:
    from .broker import Broker
    from .signing import Signer

# Tasks per enqueue script call: large enough that bulk enqueue is one round trip per
# chunk, small enough that one call does not stall Redis for long.
ENQUEUE_CHUNK = 1000
ENQUEUE_CHUNK_BYTES = 64 * 1024 * 1024
# Enqueue script calls in flight at once per client; callers beyond wait and share one.
SENDERS = 2


@dataclass(frozen=True, slots=True)
class EncodedTask:
    """A validated, serialized call, ready for the enqueue script."""

    task_id: str
    name: str
    payload: bytes
    lane: str
    schedule_ms: int = 0
    delay_ms: int = 0
    expire_ms: int = 0
    mode: int = 0
    """How the enqueue script treats the id (PROTOCOL.md, `enqueue`): CHECK (given or
    unique: a live task keeps it), FRESH (just drawn at random here: no check, no clearing)
    or RESEND (sent again after a lost reply: skipped when its job or result exists)."""
    nonce: str = ""
    """The nonce sealed in the payload (hex), kept as the job's `n`; "" when unsigned."""
    limit_key: str = ""
    """The call's limit key (entry and job `lk`, PROTOCOL.md, Limits); "" when none."""


ADDED = ord("1")  # the enqueue script's per-task flag for "added"
CHECK, FRESH, RESEND = 0, 1, 2  # EncodedTask.mode


def for_resend(tasks: Sequence[EncodedTask]) -> list[EncodedTask]:
    """`tasks` as they go out again after a call that may have landed: a fresh id is
    checked against its job and result (the first call may have added it, and the task may
    even have finished since), so a task accepted once is enqueued once."""
    return [dataclasses.replace(t, mode=RESEND) if t.mode == FRESH else t for t in tasks]


def chunks(tasks: Sequence[EncodedTask]) -> Iterator[Sequence[EncodedTask]]:
    """The tasks in script-call chunks: ENQUEUE_CHUNK tasks, or fewer when their payloads
    add up to ENQUEUE_CHUNK_BYTES (one argument must stay well below Redis's limit on a
    single bulk string, 512 MB by default)."""
    start, size = 0, 0
    for i, t in enumerate(tasks):
        if i > start and (
            i - start >= ENQUEUE_CHUNK or size + len(t.payload) > ENQUEUE_CHUNK_BYTES
        ):
            yield tasks[start:i]
            start, size = i, 0
        size += len(t.payload)
    if start < len(tasks):
        yield tasks[start:]


def pack_tasks(tasks: Sequence[EncodedTask]) -> bytes:
    """The enqueue script's task list: one msgpack blob (PROTOCOL.md, `enqueue`)."""
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            (
                t.task_id,
                t.name,
                t.payload,
                t.lane,
                t.schedule_ms,
                t.delay_ms,
                t.expire_ms,
                t.mode,
                t.nonce,
                t.limit_key,
            )
            for t in tasks
        ],
        # Redis's cmsgpack predates msgpack's bin type: payload bytes go as raw strings.
        use_bin_type=False,
    )


class RedisClient:
    """The producer operations of one app on one event loop."""

    def __init__(
        self, broker: Broker, deserialize: Deserializer, result_ttl_ms: int, signer: Signer
    ) -> None:
        self.broker = broker
        self.keys = broker.keys
        self.deserialize = deserialize
        self.result_ttl_ms = result_ttl_ms
        self.signer = signer
        # Coalescing of concurrent enqueues (see `submit`).
        self._sending = 0
        self._queued: list[tuple[list[EncodedTask], asyncio.Future[None]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    def _arguments(
        self, task_id: str, name: str, lane: str, payload: bytes
    ) -> tuple[list[Any], dict[str, Any]]:
        """A stored payload's arguments, for display. One whose signature does not verify
        is never handed to the deserializer (it may be pickle): it shows as no arguments."""
        from .signing import Binding, SignatureError

        try:
            body = self.signer.open(Binding(self.keys.queue, lane, task_id, name), payload).body
        except SignatureError:
            return [], {}
        return decode_payload(body, self.deserialize)

    def _lane_args(self) -> tuple[list[str], list[str | int]]:
        """Stream keys and ARGV tail (count, names) naming every lane of the app."""
        return self.broker.lane_streams(), [len(self.broker.lanes), *self.broker.lanes]

    async def enqueue(self, tasks: Sequence[EncodedTask]) -> list[bool]:
        """Send tasks, one script call per chunk; per task True if new, False if the id was
        already live."""
        added: list[bool] = []
        keys = [self.keys.delayed]
        for chunk in chunks(tasks):
            try:
                # Sent once: redis-py's own retry would resend it as it is, and a fresh
                # task whose first call landed (only the reply was lost) would be added
                # twice.
                reply = await self.broker.script_once(
                    "enqueue", keys, [self.keys.prefix, pack_tasks(chunk)]
                )
            except BrokerError:
                reply = await self.broker.script(
                    "enqueue", keys, [self.keys.prefix, pack_tasks(for_resend(chunk))]
                )
            added.extend(flag == ADDED for flag in bytes(reply))
        return added

    async def submit(self, tasks: list[EncodedTask]) -> None:
        """Enqueue `tasks` (one caller's, already validated), sharing script calls with
        concurrent callers: while SENDERS calls are in flight, later callers wait and go
        together in one call when one returns. A lone caller is sent at once."""
        if self._sending < SENDERS:
            self._sending += 1
            try:
                await self.enqueue(tasks)
            finally:
                self._sending -= 1
                self._send_queued()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((tasks, fut))
        await fut

    def _send_queued(self) -> None:
        if not self._queued or self._sending >= SENDERS:
            return
        # A caller cancelled while it waited is not sent.
        batch = [(tasks, fut) for tasks, fut in self._queued if not fut.cancelled()]
        self._queued = []
        if not batch:
            return
        self._sending += 1
        task = asyncio.get_running_loop().create_task(self._send_batch(batch))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_batch(
        self, batch: list[tuple[list[EncodedTask], asyncio.Future[None]]]
    ) -> None:
        try:
            try:
                await self.enqueue([t for tasks, _ in batch for t in tasks])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis unreachable or refusing writes: every caller hears it.
                if len(batch) == 1 or isinstance(exc, BrokerError):
                    raise
                # A script error: one caller's task may have failed the shared call after
                # others were added. Each caller goes again alone (one after another), ids
                # checked (`for_resend`), so nothing is added twice and only the caller at
                # fault sees the error.
                for tasks, fut in batch:
                    await self._send_alone(tasks, fut)
                return
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._sending -= 1
            self._send_queued()
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def _send_alone(self, tasks: list[EncodedTask], fut: asyncio.Future[None]) -> None:
        try:
            await self.enqueue(for_resend(tasks))
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(None)

    async def result_raw(self, task_id: str, timeout: float | None) -> bytes | None:
        if timeout is None:
            raw = await self.broker.batch.command("GET", self.keys.result(task_id))
            return None if raw is None else bytes(raw)
        waiter = self.broker.waiter
        blob: bytes = await waiter.wait_raw(task_id, timeout)
        return blob

    async def progress_raw(self, task_id: str) -> bytes | None:
        raw = await self.broker.batch.command("GET", self.keys.progress(task_id))
        return None if raw is None else bytes(raw)

    async def inspect(self, task_id: str) -> list[Any]:
        streams, lane_args = self._lane_args()
        return list(
            await self.broker.batch.script(
                "inspect",
                [self.keys.job(task_id), self.keys.result(task_id), *streams],
                ["ardiq", *lane_args],
            )
        )

    async def status(self, task_id: str) -> Status:
        reply = await self.inspect(task_id)
        return Status(reply[0].decode())

    async def info(self, task_id: str) -> TaskInfo | None:
        reply = await self.inspect(task_id)
        status = Status(reply[0].decode())
        if status in (Status.COMPLETE, Status.NOT_FOUND):
            return None
        _, fn, payload, enq, tries, at, lane = reply
        # Names come from Redis: never trusted to be UTF-8 (shown with replacement marks).
        fn_name, lane_name = text(fn), text(lane)
        args, kwargs = self._arguments(task_id, fn_name, lane_name, bytes(payload))
        return TaskInfo(
            task_id=task_id,
            fn_name=fn_name,
            args=tuple(args),
            kwargs=kwargs,
            enqueue_time=int(enq),
            tries=int(tries),
            status=status,
            scheduled_at=int(at) or None,
        )

    async def abort(self, task_id: str) -> bool:
        streams, lane_args = self._lane_args()
        k = self.keys
        reply = await self.broker.batch.script(
            "abort",
            [k.delayed, k.job(task_id), k.wait(task_id), k.result(task_id), *streams, k.parked],
            [k.prefix, "ardiq", self.result_ttl_ms, task_id, *lane_args],
        )
        return int(reply) > 0

    async def queue_size(self) -> int:
        streams = self.broker.lane_streams()
        return int(
            await self.broker.script(
                "queue_size",
                [self.keys.delayed, *streams, self.keys.parked],
                ["ardiq", len(streams)],
            )
        )

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        if limit <= 0:
            return []
        ids = await self.broker.command("ZREVRANGE", self.keys.dead, 0, limit - 1)
        if not ids:
            return []
        pipe = self.broker.client.pipeline(transaction=False)
        for raw_id in ids:
            pipe.hgetall(self.keys.dead_letter(text(raw_id)))
        with translate_errors(self.broker.url):
            records = await pipe.execute()
        letters = []
        for raw_id, rec in zip(ids, records, strict=True):
            if not rec:
                continue  # deleted between the two reads
            fn_name = text(rec.get(b"fn", b""))
            lane = text(rec.get(b"l", b""))
            args, kwargs = self._arguments(text(raw_id), fn_name, lane, rec.get(b"p", b""))
            letters.append(
                DeadLetter(
                    task_id=text(raw_id),
                    fn_name=fn_name,
                    args=args,
                    kwargs=kwargs,
                    priority=lane,
                    error=rec.get(b"err", b"").decode("utf-8", "replace"),
                    tries=int(rec.get(b"t", 0)),
                    enqueue_time=int(rec.get(b"enq", 0)),
                    failed_at=int(rec.get(b"fail", 0)),
                )
            )
        return letters

    async def attempts(self, task_id: str) -> list[Attempt]:
        raw = await self.broker.command("LRANGE", self.keys.attempts(task_id), 0, -1)
        return [a for a in (decode_attempt(r) for r in raw) if a is not None]

    async def history(self, limit: int, kind: str | None) -> list[HistoryEntry]:
        """The newest `limit` entries of `P history` (of `kind` only, when given)."""
        if limit <= 0:
            return []
        out: list[HistoryEntry] = []
        upper = "+"
        page = limit if kind is None else max(limit, HISTORY_PAGE)
        while len(out) < limit:
            reply = await self.broker.command(
                "XREVRANGE", self.keys.history, upper, "-", "COUNT", page
            )
            for _, fields in reply:
                if not isinstance(fields, dict):  # a flat field/value list
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                entry = decode_history(fields)
                if kind is None or entry.kind == kind:
                    out.append(entry)
                    if len(out) == limit:
                        break
            if len(reply) < page:
                break
            upper = "(" + text(reply[-1][0])
        return out

    async def dead_count(self) -> int:
        return int(await self.broker.command("ZCARD", self.keys.dead))

    async def replay(self, task_id: str) -> int:
        """The `replay` script's code; -4: the dead letter's seal does not verify.

        A replay is a new enqueue: a signed dead letter is opened and sealed again with a
        new nonce (PROTOCOL.md, Signed payloads)."""
        from .signing import Binding, SignatureError

        streams, lane_args = self._lane_args()
        k = self.keys
        payload, nonce = b"", ""
        if self.signer.enabled:
            fn, lane, old = await self.broker.command(
                "HMGET", k.dead_letter(task_id), "fn", "l", "p"
            )
            if fn is None:
                return 0
            binding = Binding(k.queue, text(lane), task_id, text(fn))
            try:
                opened = self.signer.open(binding, bytes(old or b""))
            except SignatureError:
                return -4
            payload, nonce = self.signer.seal(binding, opened.body, now_ms())
        return int(
            await self.broker.script(
                "replay",
                [k.dead, k.dead_letter(task_id), k.job(task_id), k.result(task_id), *streams],
                [task_id, payload, nonce, *lane_args],
            )
        )

    async def delete_dead(self, task_id: str) -> bool:
        k = self.keys
        reply = await self.broker.script("delete_dead", [k.dead, k.dead_letter(task_id)], [task_id])
        return int(reply) > 0

    # ------------------------------------------------------------------- crons
    async def pause_cron(self, name: str) -> bool:
        added = await self.broker.command("HSETNX", self.keys.crons_paused, name, now_ms())
        return int(added) == 1

    async def resume_cron(self, name: str) -> bool:
        return int(await self.broker.command("HDEL", self.keys.crons_paused, name)) == 1

    async def cron_records(self) -> tuple[dict[str, int], dict[str, int]]:
        """(`P crons`: last occurrence fired, `P crons:paused`: when paused), by name."""
        fired = await self.broker.command("HGETALL", self.keys.crons)
        paused = await self.broker.command("HGETALL", self.keys.crons_paused)
        return _ms_map(fired), _ms_map(paused)

    async def trigger_cron(self, name: str, lane: str, body: bytes) -> str:
        """Enqueue one run of cron `name` now under a fresh id, sealed as its occurrences
        are (the `cron` script with occurrence 0: the pause and the schedule are left
        alone)."""
        from .signing import Binding

        task_id = f"cron:{name}:now:{secrets.token_hex(16)}"
        payload, nonce = self.signer.seal(
            Binding(self.keys.queue, lane, task_id, name), body, now_ms()
        )
        k = self.keys
        await self.broker.script(
            "cron",
            [k.crons, k.stream(lane), k.job(task_id), k.result(task_id), k.crons_paused],
            [name, 0, task_id, name, payload, lane, nonce],
        )
        return task_id


def _ms_map(reply: Any) -> dict[str, int]:
    """A hash of name -> epoch ms, as HGETALL returns it (a dict, or a flat list)."""
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    out: dict[str, int] = {}
    for key, value in items:
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[name] = int(value)
        except (TypeError, ValueError):
            out[name] = 0
    return out
