//! ztproxy (being written).
