//! The `ztproxy` binary, built inside the test package so the integration tests always run
//! the current code (see `tests/Cargo.toml`).

fn main() -> std::process::ExitCode {
    zt_proxy::cli::main()
}
