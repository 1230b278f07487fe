//! systemd's notification protocol (`sd_notify`), for `Type=notify` units: one unix
//! datagram per message to `$NOTIFY_SOCKET` (a path, or an abstract socket name written
//! with a leading `@`). Written here rather than pulled in: it is twenty lines.
//!
//! What the worker says, and when (see `watch`):
//! * `READY=1` once the app is imported, its lifespan started and the engine reached Redis
//!   and subscribed (the engine's phase turned `Serving`);
//! * `WATCHDOG=1` every `WATCHDOG_USEC / 2` while the unit has `WatchdogSec=` set, and only
//!   while the worker is live (dispatcher and Python event loop both turning, see
//!   `health::Liveness`): a wedged worker stops petting and systemd restarts it. Sent from
//!   tokio, never from Python;
//! * `STOPPING=1` when the drain starts (or the run ends without one), unless the worker
//!   drains to recycle (its supervisor replaces it: the service goes on).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use ardiq_core::{Live, Phase, StopHandle};
use tracing::{debug, warn};

use crate::health::Liveness;

/// Where notifications go; `None` when not started by systemd (or a test) with
/// `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET").ok()?;
        (!socket.is_empty()).then_some(Notifier { socket })
    }

    /// Sends one message; failures are logged at debug only (systemd may be gone).
    pub fn send(&self, message: &str) {
        if let Err(e) = send_to(&self.socket, message.as_bytes()) {
            debug!(socket = %self.socket, error = %e, "sd_notify failed");
        }
    }
}

fn send_to(socket: &str, message: &[u8]) -> io::Result<usize> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            return sock.send_to_addr(message, &addr);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets are Linux only",
            ));
        }
    }
    sock.send_to(message, socket)
}

/// The watchdog interval systemd asked for: half of `WATCHDOG_USEC`, when it is set and
/// meant for this process (`WATCHDOG_PID`, when present, is our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(10)))
}

/// Sends `READY=1` and `STOPPING=1` as the engine's phase moves, and `WATCHDOG=1`
/// while live. Runs until the phase is `Stopped` (then makes sure `STOPPING=1` went out).
///
/// A worker that drains to recycle (`--max-tasks`, `--max-memory`) says no `STOPPING=1`:
/// the service is not stopping, its supervisor starts a fresh worker at once (under
/// systemd, with `NotifyAccess=all`, the new one says `READY=1` and pets the watchdog).
pub async fn watch(
    notifier: Notifier,
    live: Arc<Liveness>,
    engine: Arc<ardiq_core::Counters>,
    stop: StopHandle,
) {
    let phases = phases(notifier.clone(), engine.clone(), stop);
    let Some(every) = watchdog_interval() else {
        phases.await;
        return;
    };
    tokio::pin!(phases);
    let mut tick = tokio::time::interval(every);
    let mut quiet = false;
    loop {
        tokio::select! {
            _ = &mut phases => return,
            _ = tick.tick() => {
                match live.check(engine.live()) {
                    Ok(()) => {
                        quiet = false;
                        notifier.send("WATCHDOG=1");
                    }
                    Err(why) => {
                        if !quiet {
                            warn!(reason = %why, "not live: holding back the systemd watchdog");
                            quiet = true;
                        }
                    }
                }
            }
        }
    }
}

async fn phases(notifier: Notifier, engine: Arc<ardiq_core::Counters>, stop: StopHandle) {
    let live: &Live = engine.live();
    live.wait_for_phase(Phase::Serving).await;
    if live.phase() == Phase::Serving {
        notifier.send("READY=1");
    }
    live.wait_for_phase(Phase::Draining).await;
    if stop.recycling().is_none() {
        notifier.send("STOPPING=1");
    }
    live.wait_for_phase(Phase::Stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("ardiq-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("ardiq-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let server = UnixDatagram::bind_addr(&addr).unwrap();
            send_to(&format!("@{name}"), b"STOPPING=1").unwrap();
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
    }
}
