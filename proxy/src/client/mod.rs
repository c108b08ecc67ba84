//! The client side: the control API client and the `connect` commands.

pub mod api;
pub mod guac;
pub mod local;
pub mod local_checks;
pub mod play;
pub mod session;
pub mod web;
