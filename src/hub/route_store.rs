//! Runtime routes shared by several deskgate instances through Redis (`route_store:`).
//!
//! Layout, under `key_prefix` (default `deskgate:`):
//! - hash `routes`: prefix -> JSON route data (`target` and the hub's extra data);
//! - sorted set `activity_by_time`: prefix scored by its last activity in Unix ms, merged with
//!   "latest wins", so an instance reads only the routes whose time moved since its last read
//!   (versions before it kept a hash `activity`, read whole every second; it is left alone);
//! - channel `events`: `set <prefix>` / `del <prefix>` after every change.
//!
//! Writes from the admin API go to Redis first and are answered only once Redis acknowledged
//! them (503 when it is down), so nothing acknowledged is lost. Every instance follows the
//! channel and applies changes to its local snapshot; on (re)connect it resyncs everything.
//! The request path never waits on Redis: it reads the local snapshot. Activity is pushed
//! and pulled once a second, so idle culling sees traffic from every instance; both move only
//! the routes whose activity changed (the whole set is read after a (re)connect and once a
//! minute, for a time that arrived later than the overlap allows).
//!
//! With `sentinel:` the primary is whatever the sentinels name, asked again on every
//! (re)connect: a failover looks like a short outage (writes 503, reads from the snapshot)
//! followed by a resync against the promoted replica. Replication is asynchronous, so a write
//! is answered only after `WAIT ack_replicas` confirmed that many replicas have it; a
//! failover then promotes a replica that holds every acknowledged route.

use crate::config::{RouteStoreSpec, SentinelSpec, StoreBackend};
use crate::hub::runtime_routes::{normalize_prefix, ActivityChange, RuntimeRoutes};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, ConnectionAddr};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const TIMEOUT: Duration = Duration::from_secs(2);

/// "Latest wins" for activity, atomically in Redis, for pairs `prefix ms prefix ms ...` into
/// the sorted set KEYS[1] (ZADD's GT flag does this in one command but needs Redis 6.2;
/// Debian 11 and Ubuntu 22.04 ship 6.0).
const MERGE_ACTIVITY: &str = r"
for i = 1, #ARGV, 2 do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i]) end
end
return 1";

/// How far before the previous read the next one starts. A route's time reaches Redis up to a
/// sync round (1 s) after its traffic, stamped by the clock of the instance that saw it; 3 s
/// covers that and small clock differences. A time that arrives later than this is read by
/// the next whole read (at most a minute away).
const ACTIVITY_READ_OVERLAP_MS: u64 = 3_000;

/// Sync rounds (one a second) between reads of the whole activity set.
const FULL_ACTIVITY_EVERY: u32 = 60;

/// Activity pairs per script call: one round trip per this many changed routes.
const ACTIVITY_BATCH: usize = 500;

/// Where the store's Redis is: one fixed server, or the primary the sentinels name.
enum Primary {
    Fixed(Client),
    Sentinel {
        client: Mutex<SentinelClient>,
        /// `master `NAME` via sentinels a:1, b:2` for messages.
        described: String,
        ack_replicas: usize,
        ack_timeout: Duration,
    },
}

pub struct RouteStore {
    primary: Primary,
    routes_key: String,
    activity_key: String,
    channel: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    pub up: Arc<AtomicBool>,
    local: Arc<RuntimeRoutes>,
    /// How far activity has been read from Redis.
    read: std::sync::Mutex<ActivityRead>,
}

#[derive(Default)]
struct ActivityRead {
    /// When (this instance's clock) the last read started; `None`: read the whole set next.
    last_ms: Option<u64>,
    /// Sync rounds since the whole set was last read.
    rounds: u32,
}

#[derive(Debug)]
pub struct StoreDown(pub String);

/// Why the route store cannot be set up from its settings (before any connection is tried).
#[derive(Debug, thiserror::Error)]
pub enum RouteStoreError {
    #[error("route_store: bad Redis URL: {0}")]
    RedisUrl(#[source] redis::RedisError),
    #[error("route_store.sentinel: {0}")]
    Sentinel(#[source] redis::RedisError),
}

/// Why no primary could be found right now (the store is then down until it can).
#[derive(Debug, thiserror::Error)]
enum PrimaryError {
    #[error("no primary from {described}: {source}")]
    Sentinels {
        described: String,
        source: redis::RedisError,
    },
    #[error("no primary from {described}: timed out")]
    TimedOut { described: String },
}

impl RouteStore {
    pub fn new(
        spec: &RouteStoreSpec,
        local: Arc<RuntimeRoutes>,
    ) -> Result<Arc<RouteStore>, RouteStoreError> {
        let primary = match &spec.backend {
            StoreBackend::Redis { url } => {
                Primary::Fixed(Client::open(url.as_str()).map_err(RouteStoreError::RedisUrl)?)
            }
            StoreBackend::Sentinel(s) => sentinel_primary(s)?,
        };
        let key_prefix = &spec.key_prefix;
        Ok(Arc::new(RouteStore {
            primary,
            routes_key: format!("{key_prefix}routes"),
            activity_key: format!("{key_prefix}activity_by_time"),
            channel: format!("{key_prefix}events"),
            conn: Mutex::new(None),
            up: Arc::new(AtomicBool::new(false)),
            local,
            read: Default::default(),
        }))
    }

    fn config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
    }

    /// A client for the current primary: the fixed server, or the one the sentinels name now
    /// (checked with `ROLE`, so a demoted primary that comes back is not taken for one).
    async fn primary(&self) -> Result<Client, PrimaryError> {
        match &self.primary {
            Primary::Fixed(client) => Ok(client.clone()),
            Primary::Sentinel {
                client, described, ..
            } => {
                let mut sentinel = client.lock().await;
                match tokio::time::timeout(TIMEOUT, sentinel.async_get_client()).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(source)) => Err(PrimaryError::Sentinels {
                        described: described.clone(),
                        source,
                    }),
                    Err(_) => Err(PrimaryError::TimedOut {
                        described: described.clone(),
                    }),
                }
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreDown> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self.primary().await.map_err(|e| self.down(e.to_string()))?;
        match client
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
        {
            Ok(c) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => Err(self.down(e.to_string())),
        }
    }

    /// After a write: with Sentinel, wait until the primary's connected replicas (up to
    /// `ack_replicas`) confirm it, so the replica a failover promotes has it. Unconfirmed writes
    /// are refused (the hub retries them; adding or deleting a route twice is harmless). With no
    /// replica connected (just after a failover, before the old primary returns as a replica)
    /// there is nothing to wait for: the write is answered with only the primary holding it.
    async fn confirm_replicated(&self, conn: &mut MultiplexedConnection) -> Result<(), StoreDown> {
        let Primary::Sentinel {
            ack_replicas,
            ack_timeout,
            ..
        } = &self.primary
        else {
            return Ok(());
        };
        if *ack_replicas == 0 {
            return Ok(());
        }
        let failed = |e: redis::RedisError| e.to_string();
        let confirmed = async {
            let role: redis::Role = redis::cmd("ROLE").query_async(conn).await.map_err(failed)?;
            let connected = match role {
                redis::Role::Primary { replicas, .. } => replicas.len(),
                _ => return Err("the server the sentinels named is no longer the primary".into()),
            };
            let wanted = connected.min(*ack_replicas);
            if wanted == 0 {
                return Ok((0, 0));
            }
            let got: usize = redis::cmd("WAIT")
                .arg(wanted)
                .arg(ack_timeout.as_millis() as u64)
                .query_async(conn)
                .await
                .map_err(failed)?;
            Ok((got, wanted))
        };
        match confirmed.await {
            Ok((got, wanted)) if got >= wanted => Ok(()),
            Ok((got, wanted)) => Err(StoreDown(format!(
                "written to the primary but confirmed by {got} of {wanted} replica(s) within {ack_timeout:?}; a failover could lose it, retry"
            ))),
            Err(e) => {
                self.forget_connection().await;
                Err(self.down(e))
            }
        }
    }

    fn down(&self, e: String) -> StoreDown {
        if self.up.swap(false, Ordering::Relaxed) {
            log::error!("route store: Redis unavailable ({e}); serving the last known routes, rejecting writes");
        }
        StoreDown(e)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }

    /// Adds (or replaces) a route in Redis, then locally.
    pub async fn add(&self, raw_prefix: &str, data: Map<String, Value>) -> Result<(), StoreDown> {
        let prefix = normalize_prefix(raw_prefix);
        let mut conn = self.connection().await?;
        let json = Value::Object(data.clone()).to_string();
        let now = crate::telemetry::activity::now_ms();
        let result: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .hset(&self.routes_key, &prefix, &json)
            .ignore()
            .zadd(&self.activity_key, &prefix, now)
            .ignore()
            .publish(&self.channel, format!("set {prefix}"))
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            self.forget_connection().await;
            return Err(self.down(e.to_string()));
        }
        self.confirm_replicated(&mut conn).await?;
        // Also apply here at once; the event will re-apply the same data harmlessly.
        let _ = self.local.add(&prefix, data);
        Ok(())
    }

    /// Deletes a route in Redis, then locally; false if it did not exist.
    pub async fn remove(&self, raw_prefix: &str) -> Result<bool, StoreDown> {
        let prefix = normalize_prefix(raw_prefix);
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<(i64,)> = redis::pipe()
            .atomic()
            .hdel(&self.routes_key, &prefix)
            .zrem(&self.activity_key, &prefix)
            .ignore()
            .publish(&self.channel, format!("del {prefix}"))
            .ignore()
            .query_async(&mut conn)
            .await;
        match result {
            Ok((n,)) => {
                self.confirm_replicated(&mut conn).await?;
                let _ = self.local.remove(&prefix);
                Ok(n > 0)
            }
            Err(e) => {
                self.forget_connection().await;
                Err(self.down(e.to_string()))
            }
        }
    }

    /// Replaces the local routes with Redis's (after a (re)connect).
    async fn resync(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<usize> {
        let all: Vec<(String, String)> = conn.hgetall(&self.routes_key).await?;
        let mut routes = Vec::with_capacity(all.len());
        for (prefix, json) in all {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&json) {
                routes.push((prefix, m));
            }
        }
        let n = routes.len();
        self.local.replace_all(routes);
        self.sync_activity(conn, true).await?;
        Ok(n)
    }

    async fn apply_event(
        &self,
        conn: &mut MultiplexedConnection,
        event: &str,
    ) -> redis::RedisResult<()> {
        match event.split_once(' ') {
            Some(("set", prefix)) => {
                let json: Option<String> = conn.hget(&self.routes_key, prefix).await?;
                match json.and_then(|j| serde_json::from_str::<Value>(&j).ok()) {
                    // This edge's own write (applied when it was answered), or a repeat:
                    // adding it again would rebuild the route table for nothing.
                    Some(Value::Object(m)) if self.holds(prefix, &m) => {}
                    Some(Value::Object(m)) => {
                        if let Err(e) = self.local.add(prefix, m) {
                            log::warn!("route store: route {prefix} from Redis is unusable: {e:?}");
                        }
                    }
                    _ => {
                        let _ = self.local.remove(prefix);
                    }
                }
            }
            Some(("del", prefix)) => {
                let _ = self.local.remove(prefix);
            }
            _ => log::warn!("route store: unknown event `{event}`"),
        }
        Ok(())
    }

    /// Whether the local table has `prefix` with exactly this target and data.
    fn holds(&self, prefix: &str, data: &Map<String, Value>) -> bool {
        let Some(Value::Object(mut local)) = self.local.get(prefix) else {
            return false;
        };
        local.remove("last_activity");
        let mut data = data.clone();
        data.remove("last_activity");
        local == data
    }

    /// Pushes local activity that Redis does not have yet (latest wins) and pulls everyone
    /// else's. `everything` after a (re)connect: the server may be a promoted replica.
    async fn sync_activity(
        &self,
        conn: &mut MultiplexedConnection,
        everything: bool,
    ) -> redis::RedisResult<()> {
        let changed = self.local.activity_changes(everything);
        let script = redis::Script::new(MERGE_ACTIVITY);
        for batch in changed.chunks(ACTIVITY_BATCH) {
            let mut call = script.key(&self.activity_key);
            for change in batch {
                call.arg(&change.prefix).arg(change.ms);
            }
            let _: i64 = call.invoke_async(conn).await?;
            batch.iter().for_each(ActivityChange::stored);
        }
        let seen = self.pull_activity(conn, everything).await?;
        self.local.merge_activities(seen);
        Ok(())
    }

    /// The routes whose time is later than the last read (less an overlap), or the whole set
    /// (after a (re)connect, and once every `FULL_ACTIVITY_EVERY` rounds).
    async fn pull_activity(
        &self,
        conn: &mut MultiplexedConnection,
        everything: bool,
    ) -> redis::RedisResult<Vec<(String, u64)>> {
        let since = {
            let mut read = self.read.lock().expect("activity read lock");
            read.rounds += 1;
            if everything || read.rounds >= FULL_ACTIVITY_EVERY {
                read.last_ms = None;
                read.rounds = 0;
            }
            read.last_ms
        };
        let started = crate::telemetry::activity::now_ms();
        let scored: Vec<(String, f64)> = match since {
            Some(ms) => {
                let from = ms.saturating_sub(ACTIVITY_READ_OVERLAP_MS);
                conn.zrangebyscore_withscores(&self.activity_key, from, "+inf")
                    .await?
            }
            None => conn.zrange_withscores(&self.activity_key, 0, -1).await?,
        };
        // Scores are whole milliseconds, exact in an f64.
        let seen: Vec<(String, u64)> = scored
            .into_iter()
            .map(|(prefix, ms)| (prefix, ms as u64))
            .collect();
        self.read.lock().expect("activity read lock").last_ms = Some(started);
        Ok(seen)
    }

    /// Follows Redis for the life of the process: subscribe, resync, apply events, sync
    /// activity every second; on any failure, mark the store down and retry.
    pub async fn run(self: Arc<Self>, mut shutdown: pingora::server::ShutdownWatch) {
        let mut backoff = Duration::from_millis(100);
        let mut ever_up = false;
        let mut announced = false;
        loop {
            let attempt = self.follow_once();
            tokio::select! {
                _ = shutdown.changed() => return,
                e = attempt => {
                    // Said once, loudly, when the store was never reached since start: the
                    // edge serves its state file's routes meanwhile and keeps trying.
                    if !ever_up && !announced {
                        announced = true;
                        log::error!("route store: {e}; serving the state file's {} routes, refusing writes (503) and retrying until it answers", self.local.len());
                    } else {
                        log::warn!("route store: {e}; reconnecting in {backoff:?}");
                    }
                }
            }
            // After a time in sync, the first retry comes quickly: a failover is short.
            if self.up.load(Ordering::Relaxed) {
                ever_up = true;
                backoff = Duration::from_millis(100);
            }
            self.up.store(false, Ordering::Relaxed);
            self.forget_connection().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn follow_once(&self) -> String {
        let client = match self.primary().await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let at = client.get_connection_info().addr.to_string();
        let mut pubsub = match tokio::time::timeout(TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return format!("cannot subscribe at {at}: {e}"),
            Err(_) => return format!("cannot subscribe at {at}: timed out"),
        };
        if let Err(e) = pubsub.subscribe(&self.channel).await {
            return format!("cannot subscribe at {at}: {e}");
        }
        // Writes go to the server followed here, so both move together on a failover.
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
        {
            Ok(c) => c,
            Err(e) => return format!("cannot connect to {at}: {e}"),
        };
        *self.conn.lock().await = Some(conn.clone());
        // Subscribed first, then resync: no change can fall between the two.
        match self.resync(&mut conn).await {
            Ok(n) => {
                self.up.store(true, Ordering::Relaxed);
                log::info!("route store: in sync with Redis at {at} ({n} routes)");
            }
            Err(e) => return format!("resync from {at} failed: {e}"),
        }
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { return "subscription closed".into() };
                    let event: String = msg.get_payload().unwrap_or_default();
                    if let Err(e) = self.apply_event(&mut conn, &event).await {
                        return format!("applying `{event}` failed: {e}");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.sync_activity(&mut conn, false).await {
                        return format!("activity sync failed: {e}");
                    }
                }
            }
        }
    }
}

fn sentinel_primary(s: &SentinelSpec) -> Result<Primary, RouteStoreError> {
    let addrs = s
        .addrs
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    let mut builder =
        SentinelClientBuilder::new(addrs, s.master.clone(), SentinelServerType::Master)
            .map_err(RouteStoreError::Sentinel)?;
    if let Some(p) = &s.password {
        builder = builder.set_client_to_redis_password(p.expose().to_string());
    }
    if let Some(p) = &s.sentinel_password {
        builder = builder.set_client_to_sentinel_password(p.expose().to_string());
    }
    let client = builder.build().map_err(RouteStoreError::Sentinel)?;
    let sentinels: Vec<String> = s.addrs.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    Ok(Primary::Sentinel {
        client: Mutex::new(client),
        described: format!(
            "master `{}` via sentinels {}",
            s.master,
            sentinels.join(", ")
        ),
        ack_replicas: s.ack_replicas,
        ack_timeout: s.ack_timeout,
    })
}

/// Runs the store's follower as a Pingora background service.
pub struct RouteStoreService(pub Arc<RouteStore>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RouteStoreService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.clone().run(shutdown).await
    }
}
