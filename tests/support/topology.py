"""Real Redis topologies on loopback ports, from `redis-server` and `redis-cli` alone.

* `Cluster`: six nodes, three masters each with one replica, made by `redis-cli --cluster
  create`. Helpers find the master of a slot, kill it (its replica is promoted), fail a
  master over to its replica, and move a slot to another master while clients use it.
* `SentinelSetup`: one master, one replica and three sentinels watching them as
  `SENTINEL_SERVICE`. Helpers kill the master (the sentinels promote the replica) or ask
  for a graceful failover.

Every process is a `RedisServer` (own port, own directory, stopped by pid); `cleanup()`
tears the whole topology down. Timeouts are short (a node is judged down after one
second) so failover tests take seconds, not minutes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.crc import key_slot

from .redis_server import RedisServer, free_port

NODE_TIMEOUT_MS = 1000
SENTINEL_SERVICE = "ardiqmaster"


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError, LookupError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def slot_of(key: str | bytes) -> int:
    """The cluster slot of `key` (hash tags honoured), e.g. `slot_of("ardiq:{q}:x")`."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


class Cluster:
    """Six cluster nodes: three masters, three replicas. `url` is one node's URL."""

    def __init__(self, *, nodes: int = 6, replicas: int = 1, password: str | None = None):
        self.password = password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.servers = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # The bus port defaults to port + 10000, past 65535 for a high free port.
                "--cluster-port",
                str(free_port()),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # A replica with stale data may still take over: tests kill masters on
                # purpose and want a quick promotion, not a stuck slot range.
                "--cluster-replica-validity-factor",
                "0",
                "--appendonly",
                "no",
                *auth,
            )
            for _ in range(nodes)
        ]
        self.replicas = replicas

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Cluster:
        for server in self.servers:
            server.start()

        cmd = ["redis-cli"]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        cmd += ["--cluster", "create"]
        cmd += [f"127.0.0.1:{s.port}" for s in self.servers]
        cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_healthy()
        return self

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A URL of the first live node (any node of a cluster will do for clients)."""
        return self.url_of(next(s for s in self.servers if s.proc is not None).port)

    def url_of(self, port: int) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{port}"

    def client(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client of one node."""
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=5)

    def nodes(self) -> list[dict[str, object]]:
        """`CLUSTER NODES` of a live node: id, port, role, master id, slots, failed."""
        port = next(s.port for s in self.servers if s.proc is not None)
        raw = self.client(port).execute_command("CLUSTER", "NODES")
        text = raw.decode() if isinstance(raw, bytes) else raw
        nodes = []
        for line in text.strip().splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            slots: list[tuple[int, int]] = []
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated or imported
                lo, _, hi = spec.partition("-")
                slots.append((int(lo), int(hi or lo)))
            nodes.append(
                {
                    "id": parts[0],
                    "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                    "master": "master" in flags,
                    "failed": "fail" in flags or "fail?" in flags,
                    "master_id": parts[3] if parts[3] != "-" else None,
                    "slots": slots,
                }
            )
        return nodes

    def master_of_slot(self, slot: int) -> dict[str, object]:
        for node in self.nodes():
            if node["master"] and not node["failed"]:
                for lo, hi in node["slots"]:  # type: ignore[attr-defined]
                    if lo <= slot <= hi:
                        return node
        raise LookupError(f"no live master serves slot {slot}")

    def master_for(self, key: str) -> dict[str, object]:
        """The master serving `key`'s slot (e.g. `ardiq:{queue}:...`)."""
        return self.master_of_slot(slot_of(key))

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    # -- health and faults -----------------------------------------------------------

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and agrees on who serves each slot."""

        def healthy() -> bool:
            views = set()
            for server in self.servers:
                if server.proc is None:
                    continue
                c = self.client(server.port)
                info = c.execute_command("CLUSTER", "INFO")
                info = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in info:
                    return False
                slots = c.execute_command("CLUSTER", "SLOTS")
                views.add(tuple(sorted((s[0], s[1], s[2][1]) for s in slots)))
            return len(views) == 1

        _wait("a healthy cluster", healthy, timeout)

    def kill_master_for(self, key: str) -> int:
        """SIGKILL the master of `key`'s slot; returns when a replica serves the slot.
        Returns the killed node's port (restart it with `server_on(port).start()`)."""
        old = self.master_for(key)
        port = int(old["port"])  # type: ignore[call-overload]
        self.server_on(port).kill()
        slot = slot_of(key)

        def promoted() -> bool:
            node = self.master_of_slot(slot)
            return node["port"] != port

        _wait("a replica to take over", promoted, 60)
        self.wait_healthy(60)
        return port

    def failover_for(self, key: str) -> None:
        """A graceful `CLUSTER FAILOVER` of `key`'s master to its replica."""
        old = self.master_for(key)
        replica = next(n for n in self.nodes() if n["master_id"] == old["id"] and not n["failed"])
        self.client(int(replica["port"])).execute_command("CLUSTER FAILOVER")  # type: ignore[call-overload]
        _wait(
            "the failover",
            lambda: self.master_for(key)["port"] == replica["port"],
            30,
        )
        self.wait_healthy()

    def migrate_slot(self, key: str, batch: int = 100) -> int:
        """Move `key`'s slot, with its keys, to another master, the way `redis-cli
        --cluster reshard` does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE).
        Clients see ASK redirections while it runs and MOVED after. Returns the new
        master's port."""
        slot = slot_of(key)
        src = self.master_of_slot(slot)
        dst = next(
            n for n in self.nodes() if n["master"] and not n["failed"] and n["id"] != src["id"]
        )
        s = self.client(int(src["port"]))  # type: ignore[call-overload]
        d = self.client(int(dst["port"]))  # type: ignore[call-overload]
        d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src["id"])
        s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst["id"])
        while True:
            keys = s.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            args: list[object] = ["127.0.0.1", dst["port"], "", 0, 5000]
            if self.password:
                args += ["AUTH", self.password]
            s.execute_command("MIGRATE", *args, "REPLACE", "KEYS", *keys)
        for node in self.nodes():
            if node["master"] and not node["failed"]:
                self.client(int(node["port"])).execute_command(  # type: ignore[call-overload]
                    "CLUSTER SETSLOT", slot, "NODE", dst["id"]
                )
        self.wait_healthy()
        return int(dst["port"])  # type: ignore[call-overload]


class SentinelSetup:
    """One master, one replica, three sentinels. `url` is the `redis+sentinel://` URL."""

    def __init__(self, *, password: str | None = None, replicas: int = 1):
        self.password = password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = RedisServer(*auth)
        self.replicas = [RedisServer(*auth) for _ in range(replicas)]
        self.sentinels: list[RedisServer] = []
        self.sentinel_ports = [free_port() for _ in range(3)]

    def start(self) -> SentinelSetup:
        self.master.start()
        for replica in self.replicas:
            replica.extra_args += ["--replicaof", "127.0.0.1", str(self.master.port)]
            replica.start()
        _wait("replicas in sync", self._replicas_synced)
        for port in self.sentinel_ports:
            sentinel = RedisServer(port=port)
            conf = Path(sentinel.dir) / "sentinel.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {sentinel.dir}",
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {NODE_TIMEOUT_MS}",
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000",
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {SENTINEL_SERVICE} {self.password}")
            conf.write_text("\n".join(lines) + "\n")
            self._start_sentinel(sentinel, conf)
            self.sentinels.append(sentinel)
        _wait("sentinels to see each other and the replica", self._sentinels_ready)
        return self

    @staticmethod
    def _start_sentinel(sentinel: RedisServer, conf: Path) -> None:
        sentinel.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel", "--logfile", str(sentinel.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(
            f"sentinel on {sentinel.port}",
            lambda: bool(redis.Redis(port=sentinel.port, socket_timeout=1).ping()),
            10,
        )

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.cleanup()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{auth}{hosts}/{SENTINEL_SERVICE}"

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[i], socket_timeout=2)

    def master_port(self) -> int:
        """The master's port as the sentinels' majority reports it now."""
        _host, port = self.sentinel().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE
        )
        return int(port)

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in [self.master, *self.replicas] if s.port == port)

    def data_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=5)

    def _replicas_synced(self) -> bool:
        info = self.data_client(self.master.port).info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(online) == len(self.replicas) and all(r.get("state") == "online" for r in online)

    def _sentinels_ready(self) -> bool:
        for i in range(len(self.sentinels)):
            master = self.sentinel(i).execute_command("SENTINEL", "MASTER", SENTINEL_SERVICE)
            if not isinstance(master, dict):
                master = dict(zip(master[::2], master[1::2], strict=False))
            fields = {_text(k): v for k, v in master.items()}
            if int(fields["num-other-sentinels"]) < 2:
                return False
            if int(fields["num-slaves"]) < len(self.replicas):
                return False
        return True

    def kill_master(self) -> int:
        """SIGKILL the master; returns when the sentinels name a new one (its port)."""
        old = self.master_port()
        self.server_on(old).kill()
        _wait("the sentinels to promote a replica", lambda: self.master_port() != old, 60)
        new = self.master_port()
        _wait(
            "the new master to accept writes",
            lambda: self.data_client(new).info("replication")["role"] == "master",
            30,
        )
        return new

    def failover(self) -> int:
        """A graceful `SENTINEL FAILOVER`; returns the new master's port."""
        old = self.master_port()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)
        _wait("the failover", lambda: self.master_port() != old, 60)
        new = self.master_port()
        _wait(
            "the new master to accept writes",
            lambda: self.data_client(new).info("replication")["role"] == "master",
            30,
        )
        return new
