//! What drives the running edge from outside the request path: the admin API
//! (configurable-http-proxy's routes API, metrics, readiness), the admin page, and reload.

pub mod admin_api;
pub mod admin_ui;
pub mod reload;
