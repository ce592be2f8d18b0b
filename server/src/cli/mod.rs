//! Command-line interface: one subcommand per file.

mod app;
mod args;
mod demo_model;
mod generate;
mod router;
mod serve;
mod supervise;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Disaggregated prefill/decode LLM inference engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a random-weight Llama-architecture demo model (no network needed).
    DemoModel(demo_model::Args),
    /// Generate text for one or more prompts as one batch through the paged engine.
    Generate(generate::Args),
    /// Serve the OpenAI API on this machine: a router plus prefill and decode
    /// worker processes (or one colocated engine with --colocated).
    Serve(serve::ServeArgs),
    /// Run one worker process: --role prefill, decode, or both (colocated).
    Worker(worker::WorkerArgs),
    /// Serve the OpenAI API in front of prefill, decode and colocated workers.
    Router(router::RouterArgs),
}

/// The `tandem` binary: parses the command line, logs to stderr (`RUST_LOG`,
/// default `info`) and runs the subcommand.
pub fn main() -> anyhow::Result<()> {
    tandem_engine::host_memory::keep_freed_buffers();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::DemoModel(a) => demo_model::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Router(a) => router::run(a),
    }
}
