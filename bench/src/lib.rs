//! Benchmarks and load generators for ztproxy.
