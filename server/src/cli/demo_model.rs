//! `tandem demo-model`: a local, random-weight model so every command and
//! test runs without downloading weights.

use std::path::PathBuf;
use std::time::Instant;

use tandem_engine::demo::{write_demo_model, DemoSize};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write the model into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// `tiny` (for tests, ~0.2M parameters) or `small` (~80M parameters).
    #[arg(long, default_value = "tiny")]
    size: DemoSize,
    /// Seed for the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let t = Instant::now();
    let info = write_demo_model(&args.out, args.size, args.seed)?;
    println!(
        "wrote {} demo model to {} ({} parameters, vocab {}) in {:.1}s",
        info.size,
        info.dir.display(),
        info.parameters,
        info.vocab_size,
        t.elapsed().as_secs_f64()
    );
    println!("note: the weights are RANDOM; generated text is gibberish. Use it to exercise the engine, not to judge output quality.");
    Ok(())
}
