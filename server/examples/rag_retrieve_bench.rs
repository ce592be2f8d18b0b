//! Retrieve latency of one index at scale: N chunks of random words with
//! random unit vectors (no model: the query embedding is timed by the
//! embedder's own benchmark), hybrid retrieval (HNSW + BM25, fused) of the
//! top k, p50/p99 over Q queries, and the HNSW's recall@10 against exact
//! search. Prints one JSON line.
//!
//! `cargo run --release -p tandem-server --example rag_retrieve_bench -- [chunks] [queries]`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use tandem_server::rag::{dense, index};

const DIM: usize = 384;
const WORDS_PER_CHUNK: usize = 60;
const VOCABULARY: usize = 20_000;
const CHUNKS_PER_DOC: usize = 5;
const K: usize = 5;

fn unit_vector(rng: &mut impl Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = dense::dot(&v, &v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn word(i: usize) -> String {
    // Pronounceable, distinct, not English stop words.
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "tu", "ra", "so", "vi", "ze", "bu", "do", "fe", "gi", "ho", "ju",
        "py",
    ];
    let mut s = String::new();
    let mut n = i + VOCABULARY;
    while n > 0 {
        s.push_str(SYL[n % 16]);
        n /= 16;
    }
    s
}

fn text(rng: &mut impl Rng, words: usize) -> String {
    (0..words)
        .map(|_| word(rng.random_range(0..VOCABULARY)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let chunks = args.first().copied().unwrap_or(100_000);
    let queries = args.get(1).copied().unwrap_or(1000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);

    let docs: Vec<_> = (0..chunks.div_ceil(CHUNKS_PER_DOC))
        .map(|d| {
            let parts: Vec<index::NewChunk> = (0..CHUNKS_PER_DOC)
                .map(|_| index::NewChunk {
                    start_byte: 0,
                    text: text(&mut rng, WORDS_PER_CHUNK),
                    vector: unit_vector(&mut rng),
                })
                .collect();
            let body = parts
                .iter()
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
                .join("\n\n");
            (format!("{d:064x}"), body, Default::default(), parts)
        })
        .collect();
    let build = Instant::now();
    let ix = index::Index::from_documents(DIM, docs);
    let build_s = build.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(queries);
    let mut found = 0;
    for _ in 0..queries {
        let q = unit_vector(&mut rng);
        let words = text(&mut rng, 6);
        let start = Instant::now();
        let hits = ix.retrieve(&words, &q, K, None);
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(!hits.is_empty());
        found += recall_hits(&ix, &q);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "bench": "rag_retrieve",
            "chunks": ix.num_chunks(),
            "dim": DIM,
            "k": K,
            "queries": queries,
            "build_s": (build_s * 100.0).round() / 100.0,
            "p50_ms": (percentile(&latencies, 0.5) * 1000.0).round() / 1000.0,
            "p99_ms": (percentile(&latencies, 0.99) * 1000.0).round() / 1000.0,
            "hnsw_recall_at_10": found as f64 / (queries * 10) as f64,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    );
}

/// Of the exact top 10 by cosine, how many the HNSW search returns.
fn recall_hits(ix: &index::Index, q: &[f32]) -> usize {
    let (approx, exact) = ix.dense_top10_pair(q);
    approx.iter().filter(|s| exact.contains(s)).count()
}
