//! Running deskgate: reload, metrics, access log.

pub mod access_log;
pub mod metrics;
pub mod reload;
