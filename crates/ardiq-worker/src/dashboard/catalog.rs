//! Which queues the dashboard shows, with their lanes, and the Redis connection it reads
//! them with.
//!
//! Queues and lanes given (`--app`, or `--queue` with `--lanes`) are fixed. Otherwise
//! they are found with `SCAN` at start and again once a minute by a background task,
//! never by a request: a scan walks every key of the database (100,000 queued tasks are
//! 100,000 job hashes), which no page refresh should pay for.
//!
//! The connection is one multiplexed connection shared by every request. When Redis
//! stops answering it is dropped, and the next request connects again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ardiq_core::ops::{Client, OpsError};
use ardiq_core::{CronEntry, Keys};
use tracing::warn;

use crate::ops;

/// How often queues and lanes that were not given are looked for again.
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(60);

/// What the command line (or the app) fixed.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// Queues to show; empty: every queue found in the database.
    pub queues: Vec<String>,
    /// Lanes, lowest first, for every queue; `None`: those found in Redis.
    pub lanes: Option<Vec<String>>,
}

/// What `--app` says beyond the queue and lanes.
#[derive(Debug, Clone)]
pub struct AppInfo {
    /// The app's queue: the crons belong to it.
    pub queue: String,
    pub crons: Vec<CronEntry>,
    /// The app's `result_ttl_ms` (what `purge` keeps its `purged` results for).
    pub result_ttl_ms: i64,
    /// The app's signing key and seal lifetime: a cron triggered here is sealed as the
    /// app's workers seal its occurrences.
    pub signing_key: Option<ardiq_core::SigningKey>,
    pub signature_ttl_ms: i64,
}

pub struct Catalog {
    url: String,
    masked_url: String,
    given: Given,
    app: Option<AppInfo>,
    known: Mutex<Vec<Keys>>,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Catalog {
    /// Connects and finds the queues. Fails when Redis cannot be reached at start.
    pub async fn open(
        url: String,
        given: Given,
        app: Option<AppInfo>,
    ) -> Result<Arc<Catalog>, OpsError> {
        let client = Client::connect(&url, ops::TIMEOUT).await?;
        let catalog = Arc::new(Catalog {
            masked_url: client.masked_url().to_owned(),
            url,
            given,
            app,
            known: Mutex::new(Vec::new()),
            client: tokio::sync::Mutex::new(Some(client)),
        });
        catalog.discover().await?;
        Ok(catalog)
    }

    /// Whether anything is looked for again in the background.
    pub fn rediscovers(&self) -> bool {
        self.given.queues.is_empty() || self.given.lanes.is_none()
    }

    /// Looks for queues and lanes again every [`REDISCOVER_EVERY`] (when some were not
    /// given), until the runtime stops.
    pub fn spawn_rediscovery(self: &Arc<Self>) {
        if !self.rediscovers() {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REDISCOVER_EVERY).await;
                let Some(catalog) = me.upgrade() else {
                    return;
                };
                if let Err(e) = catalog.discover().await {
                    warn!(error = %e, "dashboard: looking for queues failed");
                }
            }
        });
    }

    async fn discover(&self) -> Result<(), OpsError> {
        let mut client = self.client().await?;
        let found = async {
            let queues = if self.given.queues.is_empty() {
                client.discover_queues().await?
            } else {
                self.given.queues.clone()
            };
            let mut all = Vec::with_capacity(queues.len());
            for q in queues {
                let lanes = match &self.given.lanes {
                    Some(l) => l.clone(),
                    None => client.discover_lanes(&q).await?,
                };
                all.push(Keys::new(&q, &lanes));
            }
            Ok::<_, OpsError>(all)
        }
        .await;
        let found = self.note(found)?;
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = found;
        Ok(())
    }

    /// The Redis URL, password masked.
    pub fn masked_url(&self) -> &str {
        &self.masked_url
    }

    /// Every queue shown, in order.
    pub fn queues(&self) -> Vec<Keys> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keys of queue `name`, if it is shown.
    pub fn keys(&self, name: &str) -> Option<Keys> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|k| k.queue() == name)
            .cloned()
    }

    /// The app's crons when `queue` is the app's (`None`: no app, or another queue).
    pub fn app_crons(&self, queue: &str) -> Option<&[CronEntry]> {
        self.app
            .as_ref()
            .filter(|a| a.queue == queue)
            .map(|a| a.crons.as_slice())
    }

    /// The app's settings when `queue` is the app's (`None`: no app, or another queue).
    pub fn app_for(&self, queue: &str) -> Option<&AppInfo> {
        self.app.as_ref().filter(|a| a.queue == queue)
    }

    /// The app's `result_ttl_ms` (with `--app`).
    pub fn app_result_ttl_ms(&self) -> Option<i64> {
        self.app.as_ref().map(|a| a.result_ttl_ms)
    }

    /// A handle on the shared connection, connecting again if it was dropped.
    pub async fn client(&self) -> Result<Client, OpsError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.url, ops::TIMEOUT).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Passes `result` on; drops the connection first when Redis did not answer, so the
    /// next request connects again (a restarted Redis is a new connection).
    pub fn note<T>(&self, result: Result<T, OpsError>) -> Result<T, OpsError> {
        if let Err(OpsError::Unreachable { .. }) = &result {
            self.forget();
        }
        result
    }

    /// Drops the connection: the next request connects again.
    pub fn forget(&self) {
        if let Ok(mut slot) = self.client.try_lock() {
            *slot = None;
        }
    }
}
