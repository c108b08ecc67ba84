//! Interactive connections: the Guacamole conversation between a user's client and a target.

pub mod filter;
