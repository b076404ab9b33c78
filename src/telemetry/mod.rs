//! What the data plane writes into and the operator reads: Prometheus metrics, the access
//! log, the registry of open upgraded sessions and routes' activity clocks. Nothing here
//! imports anything above `support`, so every layer may record into it.

pub mod access_log;
pub mod activity;
pub mod log_noise;
pub mod metrics;
pub mod quality;
pub mod sessions;
pub mod tcp_info;
