"""One Python function per protocol transition, for tests that drive the Lua scripts
directly (the model-based test, tests/test_model_protocol.py).

Every script call of such a test goes through here, built on the package's own
`Broker.script` and `Keys`, with KEYS/ARGV laid out exactly as the in-code worker
(python/ardiq/worker.py) and the producer client (python/ardiq/client.py) lay them out.
A change of a script's arguments or reply is then mirrored in this one module (and in the
worker), not all over the tests. Replies come back decoded into plain Python values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from ardiq import client as _client
from ardiq.broker import Broker
from ardiq.client import EncodedTask, pack_tasks
from ardiq.protocol import GROUP, Keys
from ardiq.runtime import Delivery, Outcome
from ardiq.worker.entry import as_fields, parse_entry
from ardiq.worker.reclaim import RECLAIM_COUNT

# An entry held by a consumer: (lane, entry id). Entry ids are unique per stream only.
Ref = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """The fields of a result record (`P result:<id>`) a model compares."""

    ok: bool
    value: bytes
    tries: int
    aborted: bool


def decode_result(raw: bytes) -> ResultRecord:
    """A result record: msgpack `[version, ok, value, tries, enq, start, finished,
    aborted]` (PROTOCOL.md, versions 1 and 2 share the shape)."""
    rec = msgpack.unpackb(raw, raw=True)
    if rec[0] not in (1, 2):
        raise ValueError(f"unknown result record version {rec[0]}")
    return ResultRecord(bool(rec[1]), bytes(rec[2]), int(rec[3]), bool(rec[7]))


@dataclass(frozen=True, slots=True)
class Malformed:
    """A fetched entry the worker cannot read (it finishes it as `fail` under
    `entry:<entry id>`)."""

    lane: str
    entry_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """What XAUTOCLAIM handed a reclaiming consumer on one lane."""

    lane: str
    cursor: str  # where the next scan of this lane starts
    entries: list[tuple[str, dict[bytes, bytes]]]  # (entry id, fields)


def make_task(
    task_id: str,
    name: str,
    payload: bytes,
    lane: str,
    *,
    delay_ms: int = 0,
    expire_ms: int = 0,
    fresh: bool = False,
) -> EncodedTask:
    """A task for `enqueue`, as the producer encodes it (`fresh`: its id was just drawn
    at random)."""
    mode = _client.FRESH if fresh else _client.CHECK
    return EncodedTask(
        task_id, name, payload, lane, delay_ms=delay_ms, expire_ms=expire_ms, mode=mode
    )


def resend_of(tasks: Sequence[EncodedTask]) -> list[EncodedTask]:
    """The tasks as the producer sends them again after a lost reply."""
    return _client.for_resend(tasks)


class ProtocolDriver:
    """The transitions of one queue, as a worker or a producer calls them."""

    def __init__(
        self,
        broker: Broker,
        *,
        priorities: Sequence[str],
        result_ttl_ms: int,
        max_deliveries: int,
        history: int = 0,
    ) -> None:
        self.broker = broker
        self.keys: Keys = broker.keys
        # Lowest first, as the app's `priorities`; workers read the highest first.
        self.priorities = list(priorities)
        self.lanes = list(reversed(self.priorities))
        self.rank = {lane: i for i, lane in enumerate(self.lanes)}
        self.streams = [self.keys.stream(lane) for lane in self.lanes]
        self.result_ttl_ms = result_ttl_ms
        self.max_deliveries = max_deliveries
        # The workers' `history` setting (0: the scripts write no history, attempts or
        # stats; the protocol model does not model them).
        self.history = history

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.broker.script(name, keys, args)

    # ------------------------------------------------------------- producers
    async def enqueue(self, tasks: Sequence[EncodedTask]) -> list[bool]:
        """As `RedisClient.enqueue` (one chunk): per task, True when added."""
        reply = await self.script(
            "enqueue", [self.keys.delayed], [self.keys.prefix, pack_tasks(tasks)]
        )
        return [flag == ord("1") for flag in bytes(reply)]

    def _lane_args(self) -> tuple[list[str], list[Any]]:
        # The producer names the lanes in the app's order (client._lane_args).
        return [self.keys.stream(lane) for lane in self.priorities], [
            len(self.priorities),
            *self.priorities,
        ]

    async def abort(self, task_id: str) -> int:
        """0 unknown or finished, 1 aborted now, 2 signalled to its worker."""
        streams, lane_args = self._lane_args()
        k = self.keys
        return int(
            await self.script(
                "abort",
                [k.delayed, k.job(task_id), k.wait(task_id), k.result(task_id), *streams],
                [k.prefix, GROUP, self.result_ttl_ms, task_id, *lane_args],
            )
        )

    async def replay(self, task_id: str) -> int:
        """1 re-queued, 0 no dead letter, -1 a live task holds the id, -2 unknown lane."""
        streams, lane_args = self._lane_args()
        k = self.keys
        return int(
            await self.script(
                "replay",
                [k.dead, k.dead_letter(task_id), k.job(task_id), k.result(task_id), *streams],
                [task_id, *lane_args],
            )
        )

    async def inspect(self, task_id: str) -> list[Any]:
        """[status, ...] with the status decoded; see inspect.lua for the rest."""
        streams, lane_args = self._lane_args()
        reply = list(
            await self.script(
                "inspect",
                [self.keys.job(task_id), self.keys.result(task_id), *streams],
                [GROUP, *lane_args],
            )
        )
        reply[0] = reply[0].decode()
        return reply

    async def wait(self, task_id: str, ttl_ms: int) -> tuple[int, bytes | None]:
        """(1, result blob) when finished, (0, None) registered, (-1, None) unknown."""
        k = self.keys
        reply = await self.script(
            "wait", [k.job(task_id), k.wait(task_id), k.result(task_id)], [ttl_ms]
        )
        code = int(reply[0])
        return code, (bytes(reply[1]) if code == 1 else None)

    async def queue_size(self) -> int:
        """Undelivered entries of every lane plus the delayed set."""
        streams, _ = self._lane_args()
        return int(await self.script("queue_size", [self.keys.delayed, *streams], [GROUP]))

    # --------------------------------------------------------------- workers
    async def fetch(self, consumer: str, count: int) -> list[Delivery | Malformed]:
        """As `Worker._fetch` + `parse_entry`, highest lane first."""
        reply = await self.script("fetch", self.streams, [GROUP, consumer, count])
        out: list[Delivery | Malformed] = []
        for i in range(0, len(reply), 3):
            lane = self.lanes[int(reply[i]) - 1]
            eid = reply[i + 1].decode()
            parsed = parse_entry(lane, eid, as_fields(reply[i + 2]))
            out.append(Malformed(lane, eid, parsed) if isinstance(parsed, str) else parsed)
        return out

    async def finish(self, consumer: str, outcomes: Sequence[Outcome]) -> list[int]:
        """As `Worker._finish`: per outcome 1 recorded, 0 stale."""
        k = self.keys
        keys = [k.delayed, k.dead, k.history, k.stats]
        args: list[Any] = [
            k.prefix,
            GROUP,
            consumer,
            self.result_ttl_ms,
            len(outcomes),
            self.history,
        ]
        for o in outcomes:
            keys += [
                k.stream(o.lane),
                k.job(o.task_id),
                k.wait(o.task_id),
                k.result(o.task_id),
                k.dead_letter(o.task_id),
                k.attempts(o.task_id),
            ]
            args += o.fields()  # as the finish duty lays them out
        return [int(x) for x in await self.script("finish", keys, args)]

    async def renew(self, consumer: str, refs: Sequence[Ref]) -> list[Ref]:
        """As the worker's lease duty: one call; returns the refs this consumer lost, as
        the script names them, (lane index, entry id) pairs."""
        if not refs:
            return []
        args: list[Any] = [GROUP, consumer]
        for lane, eid in refs:
            args += [self.rank[lane] + 1, eid]
        reply = list(await self.script("renew", self.streams, args))
        return [
            (self.lanes[int(reply[j]) - 1], reply[j + 1].decode())
            for j in range(0, len(reply) - 1, 2)
        ]

    async def started(self, consumer: str, deliveries: Sequence[Delivery]) -> list[bool]:
        """As the worker's `started.mark`: per delivery, True when still held (run it).
        The script also reports the live job's `e` and `n` (for signing workers)."""
        k = self.keys
        keys: list[str] = []
        for d in deliveries:
            keys += [k.stream(d.lane), k.job(d.task_id)]
        args = [GROUP, consumer, *(d.entry_id for d in deliveries)]
        return [bool(int(item[0])) for item in await self.script("started", keys, args)]

    async def autoclaim(self, consumer: str, lane: str, min_idle_ms: int, cursor: str) -> Claimed:
        """The XAUTOCLAIM half of `Worker._reclaim_lane`."""
        reply = await self.broker.command(
            "XAUTOCLAIM",
            self.keys.stream(lane),
            GROUP,
            consumer,
            min_idle_ms,
            cursor,
            "COUNT",
            RECLAIM_COUNT,
        )
        entries = [(eid.decode(), as_fields(f)) for eid, f in reply[1] if eid is not None]
        return Claimed(lane, reply[0].decode(), entries)

    async def reclaim_claimed(self, consumer: str, claimed: Claimed) -> tuple[int, int, int]:
        """The script half of `Worker._reclaim_lane`: (re-queued, dead-lettered, aborted)."""
        if not claimed.entries:
            return (0, 0, 0)
        k = self.keys
        stream = k.stream(claimed.lane)
        keys = [k.dead, k.history, k.stats]
        args: list[Any] = [
            k.prefix,
            GROUP,
            consumer,
            self.result_ttl_ms,
            self.max_deliveries,
            len(claimed.entries),
            self.history,
        ]
        for eid, fields in claimed.entries:
            raw_id = fields.get(b"id")
            task_id = raw_id.decode(errors="replace") if raw_id else f"entry:{eid}"
            keys += [
                stream,
                k.job(task_id),
                k.wait(task_id),
                k.result(task_id),
                k.dead_letter(task_id),
                k.attempts(task_id),
            ]
            args += [eid, task_id, claimed.lane]
        requeued, buried, aborted = await self.script("reclaim", keys, args)
        return int(requeued), int(buried), int(aborted)

    async def reclaim(
        self, consumer: str, min_idle_ms: int, cursors: dict[str, str]
    ) -> tuple[int, int, int]:
        """One reclaim round over every lane (XAUTOCLAIM, then the script), keeping the
        cursors in `cursors` as the worker does."""
        total = [0, 0, 0]
        for lane in self.lanes:
            claimed = await self.autoclaim(consumer, lane, min_idle_ms, cursors.get(lane, "0-0"))
            cursors[lane] = claimed.cursor
            for i, n in enumerate(await self.reclaim_claimed(consumer, claimed)):
                total[i] += n
        return total[0], total[1], total[2]

    async def promote_report(self, ids: Sequence[str] = ()) -> tuple[int, int, int, list[str]]:
        """One `promote` call as `Worker._promote_report`: (moved, server now ms, next due
        ms or -1, due ids not yet moved)."""
        k = self.keys
        keys = [k.delayed, *self.streams, *(k.job(i) for i in ids)]
        args: list[Any] = [len(self.lanes), *self.lanes, 200, *ids]
        moved, now, next_due, due = await self.script("promote", keys, args)
        return int(moved), int(now), int(next_due), [i.decode() for i in due]

    async def promote(self) -> int:
        """Both steps of a promotion round: how many due tasks moved to their streams."""
        _, _, _, due = await self.promote_report()
        if not due:
            return 0
        return (await self.promote_report(due))[0]

    async def handback(self, consumer: str, deliveries: Sequence[Delivery]) -> int:
        """As `Worker._hand_back`: how many were handed back."""
        if not deliveries:
            return 0
        k = self.keys
        keys: list[str] = []
        for d in deliveries:
            keys += [k.stream(d.lane), k.job(d.task_id)]
        eids = [d.entry_id for d in deliveries]
        return int(await self.script("handback", keys, [GROUP, consumer, *eids]))

    async def retire(self, consumer: str) -> int:
        """As `Worker._retire`: the number of groups the consumer left."""
        return int(
            await self.script("retire", [self.keys.workers, *self.streams], [GROUP, consumer])
        )
