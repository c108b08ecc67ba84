//! In-crate tests: one module per concern, sharing the helpers in `support`.

mod support;

mod bench;
mod deferred;
mod degradation;
mod guacd16;
mod hostile;
mod limits;
mod opcodes;
mod replay;
