//! The child side of a cross-process test: `serve` exposes a patterned
//! arena until stdin closes; `read` loads a peer and reads and verifies
//! random blocks. Both talk line by line on stdin/stdout:
//! `METADATA <hex>`, `NOTIFY <from> <hex>`, `READ-OK <bytes>`, `READ-FAIL <why>`.

use std::io::{BufRead, Write};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{from_hex, layout, pattern, to_hex};
use crate::{Agent, AllocatedRegion, BackendConfig, Region, RemoteAgent, UcxConfig};

/// Options of both modes, from `--key value` arguments.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Agent name.
    pub name: String,
    /// `UCX_TLS` for this agent (`None`: loopback backend).
    pub transports: Option<String>,
    /// Blocks in this process's arena.
    pub num_blocks: u32,
    /// Layout: layers (sets the block size).
    pub num_layers: u32,
    /// Layout: KV heads.
    pub num_kv_heads: u32,
    /// Pattern seed of the serving arena.
    pub seed: u64,
    /// `read` mode: how many random block pairs.
    pub pairs: usize,
    /// `read` mode: pairs per read call.
    pub batch: usize,
    /// Let the agent allocate the arena (`Agent::allocate_region`) instead
    /// of registering a Vec.
    pub allocate: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            name: format!("peer-{}", std::process::id()),
            transports: Some("tcp".into()),
            num_blocks: 64,
            num_layers: 8,
            num_kv_heads: 2,
            seed: 1,
            pairs: 100,
            batch: 50,
            allocate: false,
        }
    }
}

impl PeerOptions {
    /// Parses `--name N --tls T --blocks B --layers L --kv-heads H --seed S
    /// --pairs P --batch K --allocate 0|1`.
    pub fn parse(args: &[String]) -> Result<PeerOptions, String> {
        let mut o = PeerOptions::default();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let val = it.next().ok_or(format!("{key} needs a value"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{key} {v}: {e}"));
            match key.as_str() {
                "--name" => o.name = val.clone(),
                "--tls" => o.transports = Some(val.clone()),
                "--blocks" => o.num_blocks = num(val)? as u32,
                "--layers" => o.num_layers = num(val)? as u32,
                "--kv-heads" => o.num_kv_heads = num(val)? as u32,
                "--seed" => o.seed = num(val)?,
                "--pairs" => o.pairs = num(val)? as usize,
                "--batch" => o.batch = num(val)?.max(1) as usize,
                "--allocate" => o.allocate = num(val)? != 0,
                _ => return Err(format!("unknown option {key}")),
            }
        }
        Ok(o)
    }

    /// The agent backend: UCX on loopback devices only.
    pub fn backend(&self) -> BackendConfig {
        match &self.transports {
            None => BackendConfig::Loopback,
            Some(t) => BackendConfig::Ucx(UcxConfig {
                transports: Some(t.clone()),
                net_devices: Some("lo".into()),
            }),
        }
    }

    /// Words per block of this layout.
    pub fn block_words(&self) -> usize {
        (self.num_layers * self.num_kv_heads) as usize * 4096 / 8
    }
}

/// A word-aligned arena registered with an agent. Keeps the memory alive
/// for as long as the agent (fields drop in order: agent first).
pub struct Arena {
    /// The agent; dropped before the memory.
    pub agent: Agent,
    memory: Memory,
}

enum Memory {
    Owned(Vec<u64>),
    Agent(AllocatedRegion),
}

impl Arena {
    /// Allocates (a Vec, or through the agent with `o.allocate`), fills
    /// with the pattern of `fill_seed` (or zeros), and registers.
    pub fn new(o: &PeerOptions, fill_seed: Option<u64>) -> crate::Result<Arena> {
        let agent = Agent::new(&o.name, o.backend())?;
        let bw = o.block_words();
        let layout = layout(o.num_layers, o.num_kv_heads);
        let memory = if o.allocate {
            Memory::Agent(agent.allocate_region(bw * 8, o.num_blocks, layout)?)
        } else {
            let mut words = vec![0u64; bw * o.num_blocks as usize];
            // SAFETY: `words` lives in the returned Arena, which drops the
            // agent before the memory; the Vec is never resized.
            let region = unsafe {
                Region::host(words.as_mut_ptr() as *mut u8, bw * 8, o.num_blocks, layout)
            }?;
            agent.register(region)?;
            Memory::Owned(words)
        };
        let mut arena = Arena { agent, memory };
        match fill_seed {
            Some(seed) => pattern::fill(arena.words_mut(), bw, seed),
            None => arena.words_mut().fill(0),
        }
        Ok(arena)
    }

    /// The arena's words. Only meaningful while no read into it is in flight.
    pub fn words(&self) -> &[u64] {
        match &self.memory {
            Memory::Owned(v) => v,
            // SAFETY: the agent owns the allocation for its lifetime, which
            // covers `&self`; it is `len` bytes, 8-byte aligned (page aligned).
            Memory::Agent(r) => unsafe {
                std::slice::from_raw_parts(r.as_mut_ptr() as *const u64, r.len() / 8)
            },
        }
    }

    /// Mutable words, for filling.
    pub fn words_mut(&mut self) -> &mut [u64] {
        match &mut self.memory {
            Memory::Owned(v) => v,
            // SAFETY: as in `words`; `&mut self` makes this the only view.
            Memory::Agent(r) => unsafe {
                std::slice::from_raw_parts_mut(r.as_mut_ptr() as *mut u64, r.len() / 8)
            },
        }
    }
}

/// `serve` mode: prints `METADATA`, forwards notifications, exits on stdin EOF.
pub fn serve(o: &PeerOptions) -> Result<(), String> {
    let arena = Arena::new(o, Some(o.seed)).map_err(|e| e.to_string())?;
    println!("METADATA {}", to_hex(&arena.agent.metadata()));
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let notes = arena.agent.notifications();
    std::thread::spawn(move || loop {
        if let Some(n) = notes.recv_timeout(Duration::from_millis(100)) {
            println!("NOTIFY {} {}", n.from, to_hex(&n.payload));
            let _ = std::io::stdout().flush();
        }
    });
    // Block until the parent closes stdin (or dies, which closes it too).
    let mut sink = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut sink)
        .map_err(|e| e.to_string())?
        > 0
    {
        sink.clear();
    }
    Ok(())
}

/// `read` mode: takes `METADATA <hex>` from stdin, reads `pairs` random
/// distinct remote blocks into distinct local blocks, verifies each.
pub fn read(o: &PeerOptions) -> Result<u64, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let hex = line
        .trim()
        .strip_prefix("METADATA ")
        .ok_or("expected METADATA on stdin")?;
    let meta = from_hex(hex).ok_or("metadata is not hex")?;
    let mut arena = Arena::new(o, None).map_err(|e| e.to_string())?;
    let remote = arena.agent.add_remote(&meta).map_err(|e| e.to_string())?;
    let remote_blocks = crate::AgentMetadata::from_bytes(&meta)
        .ok()
        .and_then(|m| m.region.map(|r| r.num_blocks))
        .ok_or("peer has no region")?;
    read_verified(&mut arena, &remote, remote_blocks, o)
}

/// Reads `o.pairs` random (remote, local) pairs in reads of `o.batch`
/// pairs and verifies every block against the peer's pattern (`o.seed`).
/// About a third of the pairs come in adjacent runs, so coalescing is
/// exercised. Returns bytes read.
pub fn read_verified(
    arena: &mut Arena,
    remote: &RemoteAgent,
    remote_blocks: u32,
    o: &PeerOptions,
) -> Result<u64, String> {
    let local_blocks = o.num_blocks;
    if o.pairs > local_blocks as usize {
        return Err(format!(
            "{} pairs need that many local blocks, have {local_blocks}",
            o.pairs
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ 0x5eed);
    let mut locals: Vec<u32> = (0..local_blocks).collect();
    locals.shuffle(&mut rng);
    let pairs = random_pairs(&mut rng, &locals[..o.pairs], remote_blocks);
    let bw = o.block_words();
    let mut bytes = 0;
    for batch in pairs.chunks(o.batch) {
        let done = arena
            .agent
            .read(remote, batch, Some(b"read-done"))
            .and_then(|h| h.wait())
            .map_err(|e| e.to_string())?;
        bytes += done.bytes;
        for &(r, l) in batch {
            let block = &arena.words()[l as usize * bw..(l as usize + 1) * bw];
            pattern::check(block, r, o.seed)
                .map_err(|w| format!("local block {l} (remote {r}) differs at word {w}"))?;
        }
    }
    Ok(bytes)
}

/// Pairs for the given local ids: runs of 1..=4 adjacent remote ids
/// mapped to adjacent local ids where the local order allows.
fn random_pairs(rng: &mut impl rand::Rng, locals: &[u32], remote_blocks: u32) -> Vec<(u32, u32)> {
    let mut pairs = Vec::with_capacity(locals.len());
    let mut sorted = locals.to_vec();
    sorted.sort_unstable();
    let mut i = 0;
    while i < sorted.len() {
        let run = rng.random_range(1..=4usize).min(sorted.len() - i);
        let start = rng.random_range(0..remote_blocks.saturating_sub(run as u32).max(1));
        for k in 0..run {
            pairs.push(((start + k as u32) % remote_blocks, sorted[i + k]));
        }
        i += run;
    }
    pairs.shuffle(rng);
    pairs
}
