//! `tandem-bench transfer`: KV block reads between two processes through
//! `tandem-transport` over UCX, beside a plain memcpy of the same blocks and
//! `ucx_perftest -t ucp_get` on the same transport and sizes, in one run.
//!
//! For each transport and block size the benchmark re-executes itself as a
//! peer process that serves a patterned arena (`--arena-mib`, at least the
//! largest batch); this process reads batches of random distinct blocks
//! from it and checks the last batch against the pattern.

mod measure;
mod perftest;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tandem_transport::testing::peer::{Arena, PeerOptions};
use tandem_transport::testing::process::PeerProcess;
use tandem_transport::testing::{from_hex, pattern};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transports: `tcp`, `shm` (UCX posix,sysv,cma; arenas are registered
    /// Vecs) and `shm-alloc` (the same, arenas allocated by UCX).
    #[arg(long, value_delimiter = ',', default_value = "tcp,shm,shm-alloc")]
    transports: Vec<String>,
    /// Block sizes in KiB (multiples of 8).
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024,4096")]
    block_kib: Vec<u64>,
    /// Blocks per read.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    batch: Vec<usize>,
    /// MiB moved per shared-memory measurement point (tcp moves an eighth).
    #[arg(long, default_value_t = 1024)]
    mib_per_point: u64,
    /// Arena size per block size, MiB (at least the largest batch of blocks).
    /// 0 gives the smallest arena: with `--batch 1` one block read over and
    /// over, cache-resident like ucx_perftest's single buffer.
    #[arg(long, default_value_t = 256)]
    arena_mib: u64,
    /// Reads kept in flight (1: each read waits for the previous one).
    /// Reads in flight may target the same local block (a hot arena): the
    /// bytes are the same, so the check still holds.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Skip the ucx_perftest reference.
    #[arg(long)]
    no_perftest: bool,
    #[arg(long, default_value = "transfer-bench.json")]
    out: PathBuf,
    /// Internal: run as the peer process, `TLS:BLOCK_BYTES:BLOCKS:ALLOCATE`.
    #[arg(long, hide = true)]
    serve_peer: Option<String>,
}

#[derive(Serialize)]
struct Row {
    transport: String,
    ucx_tls: String,
    block_bytes: u64,
    arena_blocks: u32,
    batch: usize,
    window: usize,
    reads: usize,
    tandem_gb_s: f64,
    memcpy_gb_s: f64,
    perftest_gb_s: Option<f64>,
    tandem_over_perftest: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    note: &'static str,
    rows: Vec<Row>,
}

const SEED: u64 = 0xb10c;

fn ucx_tls(transport: &str) -> anyhow::Result<&'static str> {
    Ok(match transport {
        "tcp" => "tcp",
        "shm" | "shm-alloc" => "posix,sysv,cma",
        t => bail!("unknown transport {t:?} (tcp or shm)"),
    })
}

fn options(
    name: &str,
    tls: &str,
    block_bytes: u64,
    blocks: u32,
    allocate: bool,
) -> anyhow::Result<PeerOptions> {
    if !block_bytes.is_multiple_of(8192) || block_bytes == 0 {
        bail!("block size {block_bytes} is not a positive multiple of 8 KiB");
    }
    Ok(PeerOptions {
        name: name.into(),
        transports: Some(tls.into()),
        num_blocks: blocks,
        num_layers: (block_bytes / 8192) as u32,
        num_kv_heads: 2,
        seed: SEED,
        allocate,
        ..PeerOptions::default()
    })
}

fn serve_peer(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [tls, bb, n, alloc] = parts[..] else {
        bail!("--serve-peer wants TLS:BLOCK_BYTES:BLOCKS:ALLOCATE");
    };
    let o = options("bench-prefill", tls, bb.parse()?, n.parse()?, alloc == "1")?;
    tandem_transport::testing::peer::serve(&o).map_err(anyhow::Error::msg)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(spec) = &args.serve_peer {
        return serve_peer(spec);
    }
    let mut rows = Vec::new();
    for transport in &args.transports {
        let tls = ucx_tls(transport)?;
        let point_bytes = match transport.as_str() {
            "tcp" => args.mib_per_point << 17,
            _ => args.mib_per_point << 20,
        };
        for &kib in &args.block_kib {
            rows.extend(measure_size(
                &args,
                transport,
                tls,
                kib * 1024,
                point_bytes,
            )?);
        }
    }
    let report = Report {
        note: "GB/s = 1e9 bytes/s; reads of random distinct blocks; ucx_perftest -t ucp_get with the same UCX_TLS and message size",
        rows,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", summary(&report.rows, &args.out));
    Ok(())
}

fn measure_size(
    args: &Args,
    transport: &str,
    tls: &str,
    block_bytes: u64,
    point_bytes: u64,
) -> anyhow::Result<Vec<Row>> {
    let max_batch = args.batch.iter().copied().max().unwrap_or(1) as u64;
    let blocks = ((args.arena_mib << 20) / block_bytes).max(max_batch) as u32;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    let allocate = transport == "shm-alloc";
    let spec = format!("{tls}:{block_bytes}:{blocks}:{}", u8::from(allocate));
    cmd.args(["transfer", "--serve-peer", &spec]);
    let mut peer = PeerProcess::spawn(cmd)?;
    let meta = peer
        .expect_line("METADATA", Duration::from_secs(60))
        .map_err(anyhow::Error::msg)?;
    let meta = from_hex(&meta).context("peer metadata is not hex")?;
    let o = options("bench-decode", tls, block_bytes, blocks, allocate)?;
    let arena = Arena::new(&o, Some(SEED ^ 1))?; // filled: no page faults while measuring
    let remote = arena.agent.add_remote(&meta)?;
    // Touch every block once: over shared memory the first read of a page
    // maps it into this process, which is not what the points measure.
    for chunk in (0..blocks).collect::<Vec<u32>>().chunks(256) {
        let pairs: Vec<(u32, u32)> = chunk.iter().map(|&b| (b, b)).collect();
        measure::tandem(&arena.agent, &remote, &[pairs], block_bytes, 1)?;
    }
    let words = o.block_words();
    let mut src = vec![0u64; arena.words().len()];
    pattern::fill(&mut src, words, SEED);
    let mut dst = vec![1u64; arena.words().len()];

    let perftest_gb_s = if args.no_perftest {
        None
    } else {
        let iters = (point_bytes / block_bytes).clamp(100, 200_000);
        Some(perftest::get_bandwidth(tls, block_bytes, iters)?)
    };
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let reads = (point_bytes / (block_bytes * batch as u64)).clamp(4, 100_000) as usize;
        let plan = measure::plan(blocks, batch, reads, block_bytes ^ batch as u64);
        let warm = &plan[..(reads / 10).max(1)];
        measure::tandem(&arena.agent, &remote, warm, block_bytes, args.window)?;
        let tandem_gb_s = measure::tandem(&arena.agent, &remote, &plan, block_bytes, args.window)?;
        verify(&arena, plan.last().expect("reads >= 4"), words)?;
        measure::memcpy(&src, &mut dst, warm, words);
        let memcpy_gb_s = measure::memcpy(&src, &mut dst, &plan, words);
        let row = Row {
            transport: transport.into(),
            ucx_tls: tls.into(),
            block_bytes,
            arena_blocks: blocks,
            batch,
            window: args.window,
            reads,
            tandem_gb_s,
            memcpy_gb_s,
            perftest_gb_s,
            tandem_over_perftest: perftest_gb_s.map(|p| tandem_gb_s / p),
        };
        eprintln!(
            "{transport:>3} {:>5} KiB x {batch:>3}: tandem {tandem_gb_s:7.3} GB/s  memcpy {memcpy_gb_s:7.3}  ucx_perftest {}",
            block_bytes / 1024,
            perftest_gb_s.map_or("-".into(), |p| format!("{p:7.3}")),
        );
        rows.push(row);
    }
    peer.close_stdin();
    peer.wait_exit(Duration::from_secs(10));
    Ok(rows)
}

/// The blocks of the last read hold the peer's pattern.
fn verify(arena: &Arena, pairs: &[(u32, u32)], words: usize) -> anyhow::Result<()> {
    for &(r, l) in pairs {
        let block = &arena.words()[l as usize * words..(l as usize + 1) * words];
        if let Err(w) = pattern::check(block, r, SEED) {
            bail!("block {l} (remote {r}) is wrong at word {w}");
        }
    }
    Ok(())
}

/// One line: per transport, tandem / ucx_perftest over the points >= 256 KiB.
fn summary(rows: &[Row], out: &std::path::Path) -> String {
    let mut parts = Vec::new();
    let mut transports: Vec<&str> = rows.iter().map(|r| r.transport.as_str()).collect();
    transports.dedup();
    for t in transports {
        let ratios: Vec<f64> = rows
            .iter()
            .filter(|r| r.transport == t && r.block_bytes >= 256 * 1024)
            .filter_map(|r| r.tandem_over_perftest)
            .collect();
        let best = rows
            .iter()
            .filter(|r| r.transport == t)
            .map(|r| r.tandem_gb_s)
            .fold(0f64, f64::max);
        match ratios.iter().copied().reduce(f64::min) {
            Some(min) => {
                let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
                parts.push(format!(
                    "{t}: peak {best:.2} GB/s, vs ucx_perftest at >=256KiB min {min:.2} mean {mean:.2}"
                ));
            }
            None => parts.push(format!("{t}: peak {best:.2} GB/s")),
        }
    }
    format!("transfer: {} ({})", parts.join("; "), out.display())
}
