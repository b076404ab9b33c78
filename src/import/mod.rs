//! Importers: other servers' configurations as deskgate YAML (`deskgate import apache`).
//! They build `config::raw`'s model (the YAML surface's own types, so a change to the config
//! cannot leave them behind), write it with comments through `yaml_out`, and `config` then
//! validates the text like any hand-written file.

pub mod apache;
pub mod apache_conf;
pub mod cli;
mod yaml_out;
