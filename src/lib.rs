//! deskgate: a YAML-routed Pingora edge for remote desktops.
//!
//! Where things are, top layer first. Imports point down this list, never up
//! (`tests/layout.rs` checks the order and that no file imports its way back to itself):
//! - `demo`: the embedded demo and its KasmVNC-like desktop
//! - `server`: wires a runtime into a Pingora server and runs it (`deskgate -c FILE`,
//!   `deskgate chp`); start here for start-up
//! - `control`: what drives the running edge: the admin API (CHP-compatible routes API,
//!   metrics, readiness), the admin page, reload
//! - `runtime`: a validated config becomes the running objects (upstream pools, routes with
//!   their access checks and resolvers, certificates); start-up and reload both go through it
//! - `hub`: the hub integration: access checks, resolver routes, runtime routes, the Redis
//!   route store, `deskgate chp`
//! - `edge`: the Pingora `ProxyHttp` phases (`edge::proxy`) and what they call: the routing
//!   snapshot (`gateway`), forwarded headers, responses, error pages, noVNC paths, WebSocket
//!   close, connection limits
//! - `acme`: listener certificates from an ACME CA (HTTP-01, TLS-ALPN-01, DNS-01 via RFC 2136)
//! - `tls`: listener certificates by SNI, client certificates (mutual TLS), plain HTTP on a TLS
//!   port, the ACME challenge answers listeners give
//! - `import`: other servers' configurations as deskgate YAML (`deskgate import apache`)
//! - `config`: YAML surface (`raw`) -> validation -> the plain model (`model`), errors as
//!   `FILE:LINE:COL`
//! - `routing`: the route table and how a request is matched (`Routes::lookup`: the configured
//!   table and the runtime routes' tier); what a route asks of others (`AccessGate`,
//!   `UpstreamResolver`) as traits the hub implements
//! - `upstream`: peers, TLS toward self-signed desktops, balancing, health checks
//! - `telemetry`: Prometheus metrics, the access log, open sessions, activity clocks
//! - `support`: secrets, the single-flight cache, plain responses

pub mod acme;
pub mod config;
pub mod control;
pub mod demo;
pub mod edge;
pub mod hub;
pub mod import;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod support;
pub mod telemetry;
pub mod tls;
pub mod upstream;
