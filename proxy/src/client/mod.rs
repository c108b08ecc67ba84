//! The client side: the control API client and the `connect` commands.

pub mod api;
pub mod session;
