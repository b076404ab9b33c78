//! deskgate: a YAML-routed Pingora edge for remote desktops.
//!
//! Where things are (dependencies point down this list, never up; `tests/layout.rs` checks
//! that no file imports its way back to itself):
//! - `server`: wires a validated config into a Pingora server (start here for start-up)
//! - `config`: YAML surface (`raw`) -> validation -> the typed model, errors as `FILE:LINE:COL`
//! - `ops`: reload, Prometheus metrics, access log
//! - `hub`: the hub integration: admin API (CHP-compatible), runtime routes, Redis route
//!   store, resolver routes, access checks, noVNC, `deskgate chp`
//! - `edge`: the Pingora `ProxyHttp` phases (`edge::proxy`) and what they call: the routing
//!   snapshot (`gateway`), forwarded headers, responses, error pages, WebSocket close,
//!   connection limits, listener certificates by SNI
//! - `routing`: the route table and how a request is matched (`RouteTable::lookup`)
//! - `acme`: listener certificates from an ACME CA (HTTP-01, TLS-ALPN-01, DNS-01 via RFC 2136)
//! - `upstream`: peers, TLS toward self-signed desktops, balancing, health checks
//! - `support`: secrets, the single-flight cache
//! - `demo`: the embedded demo and its KasmVNC-like desktop

pub mod acme;
pub mod config;
pub mod demo;
pub mod edge;
pub mod hub;
pub mod ops;
pub mod routing;
pub mod server;
pub mod support;
pub mod upstream;
