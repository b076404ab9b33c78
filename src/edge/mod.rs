//! The data plane: Pingora's `ProxyHttp` phases (`proxy`) and the pieces they call.

pub mod answer;
pub mod error_pages;
pub mod forwarding;
pub mod gateway;
pub mod handshake_failures;
pub mod hsts;
pub mod limits;
pub mod novnc;
pub mod proxy;
pub mod rate_cap;
pub mod request_checks;
pub mod request_id;
pub mod respond;
pub mod tunnel;
pub mod websocket;
