//! The hub integration: what a desktop hub (or JupyterHub) drives and asks.

pub mod access;
pub mod chp;
pub mod resolver;
pub mod route_store;
pub mod runtime_routes;
