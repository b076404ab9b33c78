//! Small building blocks with no deskgate knowledge.

pub mod reply;
pub mod secret;
pub mod single_flight;
