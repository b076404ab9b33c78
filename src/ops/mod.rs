//! Running deskgate: reload, metrics, access log.

pub mod access_log;
pub mod admin_ui;
pub mod metrics;
pub mod reload;
pub mod sessions;
