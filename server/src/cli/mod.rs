//! Command-line interface: one subcommand per file.

mod app;
mod args;
mod demo_model;
mod generate;
mod router;
mod serve;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Disaggregated prefill/decode LLM inference engine"
)]
pub struct Cli {
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DemoModel(a) => demo_model::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Router(a) => router::run(a),
    }
}
