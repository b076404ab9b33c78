//! deskgate: a YAML-routed Pingora edge for remote desktops.
//!
//! Where things are:
//! - `config`: YAML -> validated model, errors as `FILE:LINE:COL`
//! - `routes`: the route table and how a request is matched (start here)
//! - `proxy`: the Pingora `ProxyHttp` phases, calling into the modules below
//! - `forwarding`: headers as the upstream sees them
//! - `upstream`: peers, TLS toward self-signed desktops, Basic auth, timeouts
//! - `tls`: listener certificates chosen by SNI
//! - `access`, `resolver`, `runtime_routes`, `admin`, `novnc`: the hub integration
//! - `server`: wires it all into a Pingora server; `demo`: the embedded demo

pub mod access;
pub mod access_log;
pub mod admin;
pub mod balance;
pub mod chp;
pub mod config;
pub mod demo;
pub mod error_pages;
pub mod forwarding;
pub mod gateway;
pub mod health;
pub mod hub_client;
pub mod limits;
pub mod metrics;
pub mod novnc;
pub mod proxy;
pub mod reload;
pub mod resolver;
pub mod respond;
pub mod route_store;
pub mod routes;
pub mod runtime_routes;
pub mod secret;
pub mod server;
pub mod single_flight;
pub mod tls;
pub mod upstream;
pub mod websocket;
