//! Active health checks for multi-server upstreams, run in the background for whatever the
//! current config's upstreams are (so a reload brings its own checks along).

use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The upstreams of the config in force, asked for at every tick.
pub type CurrentUpstreams = Box<dyn Fn() -> Arc<HashMap<String, Arc<Upstream>>> + Send + Sync>;

pub struct HealthChecks {
    pub upstreams: CurrentUpstreams,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    for upstream in (self.upstreams)().values() {
                        if let Some(pool) = &upstream.pool {
                            pool.maybe_check_health().await;
                        }
                    }
                }
            }
        }
    }
}
