//! The `ztproxy` binary. Everything lives in the library; see [`zt_proxy::cli`].

fn main() -> std::process::ExitCode {
    zt_proxy::cli::main()
}
