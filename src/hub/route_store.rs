//! Runtime routes shared by several deskgate instances through Redis (`route_store:`).
//!
//! Layout, under `key_prefix` (default `deskgate:`):
//! - hash `routes`: prefix -> JSON route data (`target` and the hub's extra data);
//! - hash `activity`: prefix -> last activity in Unix ms, merged with "latest wins";
//! - channel `events`: `set <prefix>` / `del <prefix>` after every change.
//!
//! Writes from the admin API go to Redis first and are answered only once Redis acknowledged
//! them (503 when it is down), so nothing acknowledged is lost. Every instance follows the
//! channel and applies changes to its local snapshot; on (re)connect it resyncs everything.
//! The request path never waits on Redis: it reads the local snapshot. Activity is pushed
//! and pulled once a second, so idle culling sees traffic from every instance.

use crate::hub::runtime_routes::{normalize_prefix, RuntimeRoutes};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const TIMEOUT: Duration = Duration::from_secs(2);

/// "Latest wins" for activity, atomically in Redis.
const MERGE_ACTIVITY: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1";

pub struct RouteStore {
    client: Client,
    routes_key: String,
    activity_key: String,
    channel: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    pub up: Arc<AtomicBool>,
    local: Arc<RuntimeRoutes>,
}

#[derive(Debug)]
pub struct StoreDown(pub String);

impl RouteStore {
    pub fn new(
        url: &str,
        key_prefix: &str,
        local: Arc<RuntimeRoutes>,
    ) -> redis::RedisResult<Arc<RouteStore>> {
        let client = Client::open(url)?;
        Ok(Arc::new(RouteStore {
            client,
            routes_key: format!("{key_prefix}routes"),
            activity_key: format!("{key_prefix}activity"),
            channel: format!("{key_prefix}events"),
            conn: Mutex::new(None),
            up: Arc::new(AtomicBool::new(false)),
            local,
        }))
    }

    fn config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreDown> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
        {
            Ok(c) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => Err(self.down(e)),
        }
    }

    fn down(&self, e: redis::RedisError) -> StoreDown {
        if self.up.swap(false, Ordering::Relaxed) {
            log::error!("route store: Redis unavailable ({e}); serving the last known routes, rejecting writes");
        }
        StoreDown(e.to_string())
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
            .hset(&self.activity_key, &prefix, now)
            .ignore()
            .publish(&self.channel, format!("set {prefix}"))
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            self.forget_connection().await;
            return Err(self.down(e));
        }
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
            .hdel(&self.activity_key, &prefix)
            .ignore()
            .publish(&self.channel, format!("del {prefix}"))
            .ignore()
            .query_async(&mut conn)
            .await;
        match result {
            Ok((n,)) => {
                let _ = self.local.remove(&prefix);
                Ok(n > 0)
            }
            Err(e) => {
                self.forget_connection().await;
                Err(self.down(e))
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
        self.sync_activity(conn).await?;
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

    /// Pushes local activity (latest wins) and pulls everyone else's.
    async fn sync_activity(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let script = redis::Script::new(MERGE_ACTIVITY);
        for (prefix, ms) in self.local.activities() {
            let _: i64 = script
                .key(&self.activity_key)
                .arg(&prefix)
                .arg(ms)
                .invoke_async(conn)
                .await?;
        }
        let all: Vec<(String, u64)> = conn.hgetall(&self.activity_key).await?;
        for (prefix, ms) in all {
            self.local.merge_activity(&prefix, ms);
        }
        Ok(())
    }

    /// Follows Redis for the life of the process: subscribe, resync, apply events, sync
    /// activity every second; on any failure, mark the store down and retry.
    pub async fn run(self: Arc<Self>, mut shutdown: pingora::server::ShutdownWatch) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = self.follow_once();
            tokio::select! {
                _ = shutdown.changed() => return,
                e = attempt => log::warn!("route store: {e}; reconnecting in {backoff:?}"),
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
        let mut pubsub = match tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return format!("cannot subscribe: {e}"),
            Err(_) => return "cannot subscribe: timed out".into(),
        };
        if let Err(e) = pubsub.subscribe(&self.channel).await {
            return format!("cannot subscribe: {e}");
        }
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return e.0,
        };
        // Subscribed first, then resync: no change can fall between the two.
        match self.resync(&mut conn).await {
            Ok(n) => {
                self.up.store(true, Ordering::Relaxed);
                log::info!("route store: in sync with Redis ({n} routes)");
            }
            Err(e) => return format!("resync failed: {e}"),
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
                    if let Err(e) = self.sync_activity(&mut conn).await {
                        return format!("activity sync failed: {e}");
                    }
                }
            }
        }
    }
}

/// Runs the store's follower as a Pingora background service.
pub struct RouteStoreService(pub Arc<RouteStore>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RouteStoreService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.clone().run(shutdown).await
    }
}
