//! Active health checks for multi-server upstreams, run in the background for whatever the
//! current config's upstreams are (so a reload brings its own checks along).

use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

pub struct HealthChecks {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let snapshot = self.gateway.snapshot();
                    for upstream in snapshot.upstreams.values() {
                        if let Some(pool) = &upstream.pool {
                            pool.maybe_check_health().await;
                        }
                    }
                }
            }
        }
    }
}
