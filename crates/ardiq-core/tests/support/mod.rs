//! Shared harness for the engine's integration tests: a throwaway `redis-server` on a free
//! loopback port, a producer that calls the `enqueue` script, scriptable test executors,
//! and readers for results and dead letters.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ardiq_core::{
    scripts, Config, Delivery, Engine, EngineError, Executor, Keys, OutcomeSink, RunReport,
    StopHandle,
};
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Never this port: a shared Redis lives there.
const FORBIDDEN_PORT: u16 = 6379;

/// A `redis-server` child process; killed (by pid) when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        loop {
            let port = free_port();
            if port == FORBIDDEN_PORT {
                continue;
            }
            let mut s = RedisServer { port, child: None };
            if s.spawn() {
                return s;
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) -> bool {
        assert_ne!(self.port, FORBIDDEN_PORT);
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH at /usr/bin/redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    // Exited: the port was taken meanwhile.
                    self.child = None;
                    return false;
                }
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Kills the server: all data is gone, like a crash without persistence.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// A fresh async connection for the test's own commands.
    pub async fn conn(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut c).is_ok()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Engine settings tuned for tests: short blocks and leases so scenarios run in seconds.
pub fn config(server: &RedisServer, queue: &str) -> Config {
    let mut c = Config::new(server.url(), queue);
    c.concurrency = 4;
    c.prefetch = 8;
    c.poll_block_ms = 100;
    c.idle_timeout_ms = 3_000;
    c.heartbeat_interval = Duration::from_millis(500);
    c
}

/// One task for [`enqueue`].
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub fn_name: String,
    pub payload: Vec<u8>,
    pub lane: String,
    pub due_ms: i64,
    pub delay_ms: i64,
    pub expire_ms: i64,
}

impl Task {
    pub fn new(id: impl Into<String>, fn_name: &str, payload: impl Into<Vec<u8>>) -> Self {
        Task {
            id: id.into(),
            fn_name: fn_name.to_owned(),
            payload: payload.into(),
            lane: "default".to_owned(),
            due_ms: 0,
            delay_ms: 0,
            expire_ms: 0,
        }
    }

    pub fn lane(mut self, lane: &str) -> Self {
        self.lane = lane.to_owned();
        self
    }

    pub fn delay(mut self, ms: i64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Expires `ms` after enqueue (the script takes it relative to the server's now).
    pub fn expire_in(mut self, ms: i64) -> Self {
        self.expire_ms = ms;
        self
    }
}

/// The producer side: calls the `enqueue` script (chunks of 500) like the Python package.
pub async fn enqueue(conn: &mut MultiplexedConnection, keys: &Keys, tasks: &[Task]) -> Vec<i64> {
    let mut out = Vec::new();
    for chunk in tasks.chunks(500) {
        for t in chunk {
            keys.lane_index(&t.lane).expect("unknown lane in test");
        }
        let reply: Vec<u8> = scripts::ENQUEUE
            .key(keys.delayed())
            .arg(keys.prefix())
            .arg(pack_tasks(chunk))
            .invoke_async(conn)
            .await
            .unwrap();
        out.extend(reply.iter().map(|&flag| i64::from(flag == b'1')));
    }
    out
}

/// The `enqueue` script's task list: a msgpack array of
/// `[id, fn, payload, lane, due_ms, delay_ms, expire_ms, fresh]` (strings as raw str, the
/// only string type Redis's cmsgpack reads).
fn pack_tasks(tasks: &[Task]) -> Vec<u8> {
    fn str32(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(0xdb);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    fn int64(out: &mut Vec<u8>, n: i64) {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
    let mut out = vec![0xdd];
    out.extend_from_slice(&(tasks.len() as u32).to_be_bytes());
    for t in tasks {
        out.push(0x98); // fixarray of 8
        str32(&mut out, t.id.as_bytes());
        str32(&mut out, t.fn_name.as_bytes());
        str32(&mut out, &t.payload);
        str32(&mut out, t.lane.as_bytes());
        int64(&mut out, t.due_ms);
        int64(&mut out, t.delay_ms);
        int64(&mut out, t.expire_ms);
        int64(&mut out, 0);
    }
    out
}

/// `n` echo tasks `<prefix><i>`.
pub fn echo_tasks(prefix: &str, n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| Task::new(format!("{prefix}{i}"), "echo", format!("payload-{i}")))
        .collect()
}

/// A decoded result record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub ok: bool,
    pub value: Vec<u8>,
    pub tries: i64,
    pub enqueued_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub aborted: bool,
}

impl TaskResult {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

pub async fn result(conn: &mut MultiplexedConnection, keys: &Keys, id: &str) -> Option<TaskResult> {
    let blob: Option<Vec<u8>> = redis::cmd("GET")
        .arg(keys.result(id))
        .query_async(conn)
        .await
        .unwrap();
    let blob = blob?;
    let mut pos = 0;
    let Msg::Array(items) = decode(&blob, &mut pos) else {
        panic!("result record is not an array")
    };
    assert_eq!(items.len(), 8, "result record has 8 elements");
    assert_eq!(items[0].int(), 2, "protocol version 2");
    Some(TaskResult {
        ok: items[1].bool(),
        value: items[2].bytes(),
        tries: items[3].int(),
        enqueued_ms: items[4].int(),
        started_ms: items[5].int(),
        finished_ms: items[6].int(),
        aborted: items[7].bool(),
    })
}

/// Waits until `id` has a result.
pub async fn wait_result(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    id: &str,
    within: Duration,
) -> TaskResult {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = result(conn, keys, id).await {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no result for {id} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until true.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A dead letter's fields, or `None`.
pub async fn dead_letter(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    id: &str,
) -> Option<HashMap<String, Vec<u8>>> {
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg(keys.dead_index())
        .arg(id)
        .query_async(conn)
        .await
        .unwrap();
    score?;
    let h: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg(keys.dead(id))
        .query_async(conn)
        .await
        .unwrap();
    Some(h)
}

// ---- a minimal msgpack reader (the result record is built by Lua's cmsgpack) ----

#[derive(Debug, Clone)]
enum Msg {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Array(Vec<Msg>),
}

impl Msg {
    fn int(&self) -> i64 {
        match self {
            Msg::Int(i) => *i,
            Msg::Float(f) => *f as i64,
            other => panic!("not an int: {other:?}"),
        }
    }
    fn bool(&self) -> bool {
        match self {
            Msg::Bool(b) => *b,
            other => panic!("not a bool: {other:?}"),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            Msg::Bytes(b) => b.clone(),
            Msg::Nil => Vec::new(),
            other => panic!("not bytes: {other:?}"),
        }
    }
}

fn decode(b: &[u8], pos: &mut usize) -> Msg {
    let take = |pos: &mut usize, n: usize| -> &[u8] {
        let s = &b[*pos..*pos + n];
        *pos += n;
        s
    };
    let be = |s: &[u8]| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let tag = take(pos, 1)[0];
    match tag {
        0x00..=0x7f => Msg::Int(i64::from(tag)),
        0xe0..=0xff => Msg::Int(i64::from(tag as i8)),
        0xc0 => Msg::Nil,
        0xc2 => Msg::Bool(false),
        0xc3 => Msg::Bool(true),
        0xcc => Msg::Int(be(take(pos, 1)) as i64),
        0xcd => Msg::Int(be(take(pos, 2)) as i64),
        0xce => Msg::Int(be(take(pos, 4)) as i64),
        0xcf => Msg::Int(be(take(pos, 8)) as i64),
        0xd0 => Msg::Int(i64::from(take(pos, 1)[0] as i8)),
        0xd1 => Msg::Int(i64::from(be(take(pos, 2)) as u16 as i16)),
        0xd2 => Msg::Int(i64::from(be(take(pos, 4)) as u32 as i32)),
        0xd3 => Msg::Int(be(take(pos, 8)) as i64),
        0xca => Msg::Float(f64::from(f32::from_bits(be(take(pos, 4)) as u32))),
        0xcb => Msg::Float(f64::from_bits(be(take(pos, 8)))),
        0xa0..=0xbf => Msg::Bytes(take(pos, usize::from(tag & 0x1f)).to_vec()),
        0xd9 | 0xc4 => {
            let n = be(take(pos, 1)) as usize;
            Msg::Bytes(take(pos, n).to_vec())
        }
        0xda | 0xc5 => {
            let n = be(take(pos, 2)) as usize;
            Msg::Bytes(take(pos, n).to_vec())
        }
        0xdb | 0xc6 => {
            let n = be(take(pos, 4)) as usize;
            Msg::Bytes(take(pos, n).to_vec())
        }
        0x90..=0x9f => Msg::Array((0..(tag & 0x0f)).map(|_| decode(b, pos)).collect()),
        0xdc => {
            let n = be(take(pos, 2));
            Msg::Array((0..n).map(|_| decode(b, pos)).collect())
        }
        other => panic!("unsupported msgpack tag {other:#x}"),
    }
}

// ---- test executors ----

/// What [`TestExecutor`] does, by task name:
/// * `echo`: succeeds with the payload as the value;
/// * `fail`: fails for good with `boom`;
/// * `flaky`: first attempt asks for a retry after the payload's ms, then echoes;
/// * `sleep`: sleeps the payload's ms (abortable), then echoes;
/// * `attempt`: succeeds with `call <n>` (n counts calls of this id);
/// * anything else: fails with `unknown task`.
#[derive(Default)]
pub struct TestExecutor {
    /// Calls per task id, in start order.
    pub calls: Mutex<HashMap<String, u32>>,
    /// Start order of task ids.
    pub order: Mutex<Vec<String>>,
    /// Start times per task id (ms).
    pub starts: Mutex<HashMap<String, Vec<i64>>>,
    /// Deliveries as received, for inspection.
    pub deliveries: Mutex<Vec<Delivery>>,
    /// Sizes of the batches `start` received.
    pub batches: Mutex<Vec<usize>>,
    aborts: Mutex<HashMap<String, Arc<Notify>>>,
    /// Abort requests received.
    pub abort_requests: Mutex<Vec<String>>,
}

impl TestExecutor {
    pub fn new() -> Arc<Self> {
        Arc::new(TestExecutor::default())
    }

    pub fn calls_of(&self, id: &str) -> u32 {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

fn payload_ms(d: &Delivery) -> u64 {
    String::from_utf8_lossy(&d.payload)
        .trim()
        .parse()
        .unwrap_or(0)
}

impl Executor for TestExecutor {
    fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink) {
        self.batches.lock().unwrap().push(batch.len());
        for d in batch {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                let c = calls.entry(d.task_id.clone()).or_insert(0);
                *c += 1;
                *c
            };
            self.order.lock().unwrap().push(d.task_id.clone());
            let started = now_ms();
            self.starts
                .lock()
                .unwrap()
                .entry(d.task_id.clone())
                .or_default()
                .push(started);
            self.deliveries.lock().unwrap().push(d.clone());
            let sink = outcomes.clone();
            match d.fn_name.as_str() {
                "echo" => {
                    sink.send_one(d.ok(d.payload.clone(), started));
                }
                "fail" => {
                    sink.send_one(d.fail("boom", started));
                }
                "flaky" if d.tries == 0 => {
                    sink.send_one(d.retry("try again", payload_ms(&d), started));
                }
                "flaky" => {
                    sink.send_one(d.ok(d.payload.clone(), started));
                }
                "attempt" => {
                    sink.send_one(d.ok(format!("call {n}").into_bytes(), started));
                }
                "sleep" => {
                    let stop = Arc::new(Notify::new());
                    self.aborts
                        .lock()
                        .unwrap()
                        .insert(d.task_id.clone(), stop.clone());
                    let ms = payload_ms(&d);
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                                sink.send_one(d.ok(d.payload.clone(), started));
                            }
                            _ = stop.notified() => {
                                sink.send_one(d.aborted(started));
                            }
                        }
                    });
                }
                _ => {
                    sink.send_one(d.fail(format!("unknown task '{}'", d.fn_name), started));
                }
            }
        }
    }

    fn abort(&self, task_id: &str) {
        self.abort_requests.lock().unwrap().push(task_id.to_owned());
        if let Some(n) = self.aborts.lock().unwrap().get(task_id) {
            n.notify_one();
        }
    }
}

/// A running engine.
pub struct Running {
    pub stop: StopHandle,
    pub handle: JoinHandle<Result<RunReport, EngineError>>,
    pub counters: Arc<ardiq_core::Counters>,
}

impl Running {
    /// Waits for the run to end (bounded).
    pub async fn join(self, within: Duration) -> RunReport {
        tokio::time::timeout(within, self.handle)
            .await
            .expect("engine did not return in time")
            .expect("engine task panicked")
            .expect("engine returned an error")
    }

    /// Graceful stop, then wait.
    pub async fn stop(self, within: Duration) -> RunReport {
        self.stop.stop();
        self.join(within).await
    }
}

pub fn spawn_engine(config: Config, exec: Arc<dyn Executor>) -> Running {
    init_logs();
    let engine = Engine::new(config).expect("valid config");
    let stop = engine.stop_handle();
    let counters = engine.counters();
    let handle = tokio::spawn(engine.run(exec));
    Running {
        stop,
        handle,
        counters,
    }
}

/// Engine logs, shown for failing tests (or all with `--nocapture`); `RUST_LOG` filters,
/// default `warn`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A reply in debug form, for `contains` checks.
pub fn raw(v: &Value) -> String {
    format!("{v:?}")
}

/// Reads up to `count` new entries as `consumer` (a stand-in for another worker) and
/// returns their entry ids with their fields, never acknowledging them.
pub async fn read_as(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    lane: usize,
    consumer: &str,
    count: usize,
) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let _: Result<Value, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.stream(lane))
        .arg("ardiq")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    let v: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("ardiq")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(keys.stream(lane))
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    let Value::Array(streams) = v else { return out };
    for s in streams {
        let Value::Array(parts) = s else { continue };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for e in entries {
            let Value::Array(e) = e else { continue };
            let eid: String = redis::from_redis_value(e[0].clone()).unwrap();
            let fields: HashMap<String, Vec<u8>> = redis::from_redis_value(e[1].clone()).unwrap();
            out.push((eid, fields));
        }
    }
    out
}

/// Pending entries of the lane's group, per consumer name.
pub async fn pending_by_consumer(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    lane: usize,
) -> HashMap<String, i64> {
    let v: Value = redis::cmd("XPENDING")
        .arg(keys.stream(lane))
        .arg("ardiq")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = HashMap::new();
    if let Value::Array(parts) = v {
        if let Some(Value::Array(consumers)) = parts.get(3) {
            for c in consumers {
                let (name, n): (String, String) = redis::from_redis_value(c.clone()).unwrap();
                out.insert(name, n.parse().unwrap());
            }
        }
    }
    out
}

/// The producer's `abort` script.
pub async fn abort_task(conn: &mut MultiplexedConnection, keys: &Keys, id: &str) -> i64 {
    let mut inv = scripts::ABORT.prepare_invoke();
    inv.key(keys.delayed())
        .key(keys.job(id))
        .key(keys.wait(id))
        .key(keys.result(id));
    for lane in 0..keys.lanes().len() {
        inv.key(keys.stream(lane));
    }
    inv.arg(keys.prefix())
        .arg("ardiq")
        .arg(300_000)
        .arg(id)
        .arg(keys.lanes().len());
    for l in keys.lanes() {
        inv.arg(l);
    }
    inv.invoke_async(conn).await.unwrap()
}
