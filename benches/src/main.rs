//! `tandem-bench`: tandem's benchmarks. Each subcommand writes JSON and
//! prints a one-line summary.

mod decode;
mod membw;
mod random_model;
mod throughput;
mod transfer;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tandem-bench",
    version,
    about = "Benchmarks for the tandem inference engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode tokens/s of a random-weight model against the memory-bandwidth floor.
    Decode(decode::Args),
    /// Offline serving throughput at several max_num_seqs, and prefix-cache TTFT.
    Throughput(throughput::Args),
    /// KV block reads between processes (tandem-transport over UCX) vs memcpy and ucx_perftest.
    Transfer(transfer::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Decode(a) => decode::run(a),
        Command::Throughput(a) => throughput::run(a),
        Command::Transfer(a) => transfer::run(a),
    }
}
