//! Command-line interface: one subcommand per file.

mod demo_model;
mod generate;
mod serve;

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
    /// Serve the OpenAI-compatible API (colocated: prefill and decode in one engine).
    Serve(serve::ServeArgs),
    /// Run one worker: `--role both` serves the OpenAI API like `serve`.
    Worker(serve::WorkerArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DemoModel(a) => demo_model::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::serve(a),
        Command::Worker(a) => serve::worker(a),
    }
}
