//! Importers: other servers' configurations as deskgate YAML (`deskgate import apache`).
//! They write text that `config` then validates like any hand-written file.

pub mod apache;
pub mod apache_conf;
pub mod cli;
mod yaml_out;
