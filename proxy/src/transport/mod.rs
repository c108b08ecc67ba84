//! The transports between clients and ztproxy.

pub mod quic;
pub mod runtime;
pub mod stream;
pub mod udp;
pub mod udp_filter;
pub mod webrtc;
