//! `zt-recording`: the recording tools without the proxy (`ztproxy recording` is the same).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    zt_recorder_cli::run(zt_recorder_cli::Cli::parse().command)
}
