//! HNSW recall@k against exact search, and query latency, per `ef_search`:
//! the measurement behind `--rag-ef-search`'s default (docs/rag.md). One
//! graph over N random unit vectors (the hard case: no clusters), then for
//! each beam the same queries, compared with a brute-force scan.
//!
//!     cargo run --release -p tandem-server --example hnsw_recall -- \
//!         --vectors 100000 --dim 384 --queries 300 --intrinsic-dim 32 --ef 16,32,64,96,128
//!
//! Prints a table and, last, one JSON line with every row.

use std::time::Instant;

use clap::Parser;
use rand::{Rng, SeedableRng};
use tandem_server::rag::dense::{self, DenseIndex, HnswParams};

#[derive(Parser)]
struct Args {
    /// Vectors in the index.
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    /// Their dimension (all-MiniLM-L6-v2's is 384).
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Queries per beam (random unit vectors, not in the index).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Neighbours asked for (recall@k).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The `ef_search` values to measure, comma-separated (default: a sweep
    /// around the built-in default).
    #[arg(long, value_delimiter = ',')]
    ef: Vec<usize>,
    /// Graph degree (default: the index's).
    #[arg(long)]
    m: Option<usize>,
    /// Build beam (default: the index's).
    #[arg(long)]
    ef_construction: Option<usize>,
    /// 0: uniform random unit vectors (every direction equally likely, the
    /// worst case for any graph index). D > 0: vectors near a random
    /// D-dimensional subspace (`A·z` plus 5% noise, normalised), closer to
    /// how sentence embeddings fill their space.
    #[arg(long, default_value_t = 0)]
    intrinsic_dim: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Where the vectors come from: a random `[dim, d]` basis, or none.
struct Source {
    dim: usize,
    basis: Option<Vec<Vec<f32>>>,
}

impl Source {
    fn new(dim: usize, intrinsic_dim: usize, rng: &mut impl Rng) -> Self {
        let basis = (intrinsic_dim > 0).then(|| {
            (0..dim)
                .map(|_| {
                    (0..intrinsic_dim)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect()
                })
                .collect()
        });
        Source { dim, basis }
    }

    fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
        let Some(basis) = &self.basis else {
            return random_unit_vectors(n, self.dim, rng);
        };
        let d = basis[0].len();
        let scale = (d as f32 / 3.0).sqrt();
        (0..n)
            .map(|_| {
                let z: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let mut v: Vec<f32> = basis
                    .iter()
                    .map(|row| dense::dot(row, &z) + 0.05 * scale * rng.random_range(-1.0f32..1.0))
                    .collect();
                let norm = dense::dot(&v, &v).sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect()
    }
}

fn random_unit_vectors(n: usize, dim: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let norm = dense::dot(&v, &v).sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

struct Row {
    ef: usize,
    recall: f64,
    mean_us: f64,
    p99_us: f64,
}

/// Recall and latency of one beam over all queries.
fn measure(
    index: &mut DenseIndex,
    ef: usize,
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
    k: usize,
) -> Row {
    index.set_ef_search(ef);
    let mut found = 0;
    let mut micros = Vec::with_capacity(queries.len());
    for (q, exact) in queries.iter().zip(truth) {
        let start = Instant::now();
        let hits = index.search(q, k, None);
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        found += hits.iter().filter(|h| exact.contains(&h.0)).count();
    }
    micros.sort_by(f64::total_cmp);
    Row {
        ef,
        recall: found as f64 / (queries.len() * k) as f64,
        mean_us: micros.iter().sum::<f64>() / micros.len() as f64,
        p99_us: micros[(micros.len() * 99 / 100).min(micros.len() - 1)],
    }
}

fn main() {
    let args = Args::parse();
    let defaults = HnswParams::default();
    let params = HnswParams {
        m: args.m.unwrap_or(defaults.m),
        ef_construction: args.ef_construction.unwrap_or(defaults.ef_construction),
        ..defaults
    };
    let efs = if args.ef.is_empty() {
        vec![16, 32, 48, 64, 96, 128, 192, 256]
    } else {
        args.ef.clone()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let source = Source::new(args.dim, args.intrinsic_dim, &mut rng);
    let vectors = source.sample(args.vectors, &mut rng);
    let queries = source.sample(args.queries, &mut rng);

    let mut index = DenseIndex::with_params(args.dim, params);
    let start = Instant::now();
    index.add(&vectors);
    let build_s = start.elapsed().as_secs_f64();
    drop(vectors);
    let start = Instant::now();
    let truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            index
                .exact(q, args.k, |_| true)
                .iter()
                .map(|h| h.0)
                .collect()
        })
        .collect();
    let exact_us = start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
    println!(
        "{} vectors x {} dims (intrinsic {}), M {}, ef_construction {}: built in {build_s:.1} s; exact scan {exact_us:.0} us/query",
        args.vectors, args.dim, args.intrinsic_dim, params.m, params.ef_construction
    );
    println!("ef_search  recall@{}  mean_us  p99_us", args.k);
    let rows: Vec<Row> = efs
        .iter()
        .map(|&ef| {
            let r = measure(&mut index, ef, &queries, &truth, args.k);
            println!(
                "{:>9}  {:>9.4}  {:>7.0}  {:>6.0}",
                r.ef, r.recall, r.mean_us, r.p99_us
            );
            r
        })
        .collect();
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({"ef_search": r.ef, "recall": r.recall, "mean_us": r.mean_us, "p99_us": r.p99_us})
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "vectors": args.vectors, "dim": args.dim, "intrinsic_dim": args.intrinsic_dim, "k": args.k, "queries": args.queries,
            "m": params.m, "ef_construction": params.ef_construction,
            "build_s": build_s, "exact_us": exact_us, "rows": json_rows,
        })
    );
}
