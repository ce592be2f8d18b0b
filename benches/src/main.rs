//! `tandem-bench`: tandem's benchmarks. Each subcommand writes JSON and
//! prints a one-line summary.

mod alloc_count;
mod decode;
mod guided;
mod membw;
mod plot;
mod random_model;
mod roof;
mod serve;
mod sweep;
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
    /// Guided decoding's cost per decode step at several batch sizes, beside the unconstrained step.
    Guided(guided::Args),
    /// Offline serving throughput at several max_num_seqs, and prefix-cache TTFT.
    Throughput(throughput::Args),
    /// KV block reads between processes (tandem-transport over UCX) vs memcpy and ucx_perftest.
    Transfer(transfer::Args),
    /// Load-test an OpenAI-compatible server: TTFT/TPOT/ITL/E2E, throughput, goodput.
    Serve(Box<serve::Args>),
    /// `serve` at several request rates or concurrencies, one JSON line per run.
    Sweep(Box<sweep::SweepArgs>),
    /// Plot TTFT/TPOT percentiles vs rate from sweep results (PNG or SVG).
    Plot(plot::Args),
    /// The measured FMA peak (f32, bf16) beside the prefill GEMMs of every kernel build and candle's.
    Roof(roof::Args),
}

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

fn main() -> anyhow::Result<()> {
    // As `tandem` does, so the benches measure the same allocator.
    tandem_engine::host_memory::keep_freed_buffers();
    match Cli::parse().command {
        Command::Decode(a) => decode::run(a),
        Command::Guided(a) => guided::run(a),
        Command::Throughput(a) => throughput::run(a),
        Command::Transfer(a) => transfer::run(a),
        Command::Serve(a) => serve::run(*a),
        Command::Sweep(a) => sweep::run(*a),
        Command::Plot(a) => plot::run(a),
        Command::Roof(a) => roof::run(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the whole CLI (unique ids, conflicts) only when asked.
    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
