//! Two (or three) real OS processes on 127.0.0.1: a child serves a 256 MiB
//! patterned arena over UCX, the test process (or child readers) pull
//! random blocks and verify them byte for byte. Over TCP and over shared
//! memory (posix/sysv + cma). Every wait is bounded; children are killed
//! when a test fails (PeerProcess drops).

use std::process::Command;
use std::time::{Duration, Instant};

use tandem_transport::testing::peer::{read_verified, Arena, PeerOptions};
use tandem_transport::testing::process::PeerProcess;
use tandem_transport::testing::{from_hex, to_hex};
use tandem_transport::TransportError;

const TCP: &str = "tcp";
const SHM: &str = "posix,sysv,cma";
/// 4096 blocks of 64 KiB (8 layers x 2 KV heads x 16 tokens x 64 x bf16).
const ARENA_BLOCKS: u32 = 4096;
const SEED: u64 = 0x7a4d;

fn opts(tls: &str, name: &str, blocks: u32) -> PeerOptions {
    PeerOptions {
        name: name.into(),
        transports: Some(tls.into()),
        num_blocks: blocks,
        num_layers: 8,
        num_kv_heads: 2,
        seed: SEED,
        pairs: 1000,
        batch: 100,
        allocate: false,
    }
}

fn peer_command(mode: &str, o: &PeerOptions) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem-transport-peer"));
    c.arg(mode);
    for (k, v) in [
        ("--name", o.name.clone()),
        ("--tls", o.transports.clone().unwrap_or_default()),
        ("--blocks", o.num_blocks.to_string()),
        ("--layers", o.num_layers.to_string()),
        ("--kv-heads", o.num_kv_heads.to_string()),
        ("--seed", o.seed.to_string()),
        ("--pairs", o.pairs.to_string()),
        ("--batch", o.batch.to_string()),
        ("--allocate", u8::from(o.allocate).to_string()),
    ] {
        c.args([k, &v]);
    }
    c
}

/// Starts a serving child and returns it with its metadata.
fn serve(o: &PeerOptions) -> (PeerProcess, Vec<u8>) {
    let mut p = PeerProcess::spawn(peer_command("serve", o)).expect("spawn peer");
    let hex = p.expect_line("METADATA", Duration::from_secs(20)).unwrap();
    (p, from_hex(&hex).expect("hex metadata"))
}

fn thousand_random_blocks(tls: &str, allocate: bool) {
    let mut served = opts(tls, "prefill", ARENA_BLOCKS);
    served.allocate = allocate;
    let (mut server, meta) = serve(&served);
    let mut o = opts(tls, "decode", 1024);
    o.allocate = allocate;
    let mut reader = Arena::new(&o, None).unwrap();
    let remote = reader.agent.add_remote(&meta).unwrap();
    let bytes = read_verified(&mut reader, &remote, ARENA_BLOCKS, &o).unwrap();
    assert_eq!(bytes, 1000 * 65536);
    // One notification per read (10 reads), each after its data arrived.
    for i in 0..10 {
        let line = server
            .expect_line("NOTIFY", Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            line,
            format!("decode {}", to_hex(b"read-done")),
            "notification {i}"
        );
    }
    server.close_stdin();
    assert!(server
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

#[test]
fn tcp_thousand_random_blocks_verified() {
    thousand_random_blocks(TCP, false);
}

#[test]
fn shm_thousand_random_blocks_verified() {
    thousand_random_blocks(SHM, false);
}

/// Arenas allocated by UCX: shared segments the reader maps (one-sided memcpy).
#[test]
fn shm_ucx_allocated_thousand_random_blocks_verified() {
    thousand_random_blocks(SHM, true);
}

/// Two reader processes pull from one server at the same time.
fn two_readers(tls: &str) {
    let (_server, meta) = serve(&opts(tls, "prefill", 1024));
    let readers: Vec<PeerProcess> = (0..2)
        .map(|i| {
            let mut o = opts(tls, &format!("decode-{i}"), 512);
            o.pairs = 500;
            o.batch = 50;
            let mut p = PeerProcess::spawn(peer_command("read", &o)).expect("spawn reader");
            p.send_line(&format!("METADATA {}", to_hex(&meta))).unwrap();
            p
        })
        .collect();
    for mut r in readers {
        let bytes = r.expect_line("READ-OK", Duration::from_secs(30)).unwrap();
        assert_eq!(bytes, (500 * 65536).to_string());
    }
}

#[test]
fn tcp_two_readers_at_once() {
    two_readers(TCP);
}

#[test]
fn shm_two_readers_at_once() {
    two_readers(SHM);
}

/// The server is SIGKILLed while reads stream from it: a read fails within
/// its deadline, and the next one fails at once.
fn peer_killed_mid_transfer(tls: &str, allocate: bool) {
    let mut served = opts(tls, "prefill", 1024);
    served.allocate = allocate;
    let (mut server, meta) = serve(&served);
    let reader = Arena::new(&opts(tls, "decode", 1024), None).unwrap();
    let remote = reader.agent.add_remote(&meta).unwrap();
    let all: Vec<(u32, u32)> = (0..1024).map(|b| (b, 1023 - b)).collect();
    let timeout = Duration::from_secs(5);
    reader
        .agent
        .read_with_timeout(&remote, &all, None, timeout)
        .unwrap()
        .wait()
        .unwrap();

    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        server.kill();
        Instant::now()
    });
    let started = Instant::now();
    let err = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "reads kept succeeding after the kill"
        );
        let result = reader
            .agent
            .read_with_timeout(&remote, &all, None, timeout)
            .and_then(|h| h.wait());
        if let Err(e) = result {
            break e;
        }
    };
    let killed_at = killer.join().unwrap();
    eprintln!(
        "{tls}: failed {:?} after the kill: {err}",
        killed_at.elapsed()
    );
    assert!(
        killed_at.elapsed() < timeout + Duration::from_secs(1),
        "the failure took {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(
        matches!(
            err,
            TransportError::PeerFailed { .. } | TransportError::Timeout { .. }
        ),
        "{err}"
    );
    let again = Instant::now();
    let next = reader
        .agent
        .read_with_timeout(&remote, &all[..1], None, timeout)
        .and_then(|h| h.wait());
    assert!(next.is_err(), "a read from a dead peer succeeded");
    assert!(again.elapsed() <= timeout + Duration::from_secs(1));
}

#[test]
fn tcp_peer_killed_mid_transfer_is_an_error() {
    peer_killed_mid_transfer(TCP, false);
}

#[test]
fn shm_peer_killed_mid_transfer_is_an_error() {
    peer_killed_mid_transfer(SHM, false);
}

#[test]
fn shm_ucx_allocated_peer_killed_mid_transfer_is_an_error() {
    peer_killed_mid_transfer(SHM, true);
}

/// A peer restarted under the same name: its new metadata (newer epoch)
/// replaces the broken connection, the old handle is refused as stale, and
/// a notification-only read (no blocks) reaches the new incarnation.
#[test]
fn tcp_restarted_peer_is_reloaded_by_epoch() {
    let (mut first, old_meta) = serve(&opts(TCP, "prefill", 64));
    let reader = Arena::new(&opts(TCP, "decode", 64), None).unwrap();
    let old = reader.agent.add_remote(&old_meta).unwrap();
    reader
        .agent
        .read(&old, &[(1, 1)], None)
        .unwrap()
        .wait()
        .unwrap();
    first.kill();

    let (mut second, new_meta) = serve(&opts(TCP, "prefill", 64));
    let new = reader.agent.add_remote(&new_meta).unwrap();
    assert!(new.epoch() > old.epoch());
    assert!(matches!(
        reader.agent.read(&old, &[(1, 1)], None),
        Err(TransportError::StaleEpoch { .. })
    ));
    assert!(matches!(
        reader.agent.add_remote(&old_meta),
        Err(TransportError::StaleEpoch { .. })
    ));
    let done = reader
        .agent
        .read(&new, &[], Some(b"free 7"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.bytes, 0);
    let line = second
        .expect_line("NOTIFY", Duration::from_secs(5))
        .unwrap();
    assert_eq!(line, format!("decode {}", to_hex(b"free 7")));
}

#[test]
fn layout_mismatch_across_processes_names_the_field() {
    let mut served = opts(TCP, "prefill", 16);
    served.num_kv_heads = 4;
    let (_server, meta) = serve(&served);
    let reader = Arena::new(&opts(TCP, "decode", 16), None).unwrap();
    match reader.agent.add_remote(&meta) {
        Err(
            e @ TransportError::LayoutMismatch {
                field: "num_kv_heads",
                ..
            },
        ) => {
            assert!(e.to_string().contains("num_kv_heads"), "{e}");
        }
        r => panic!("expected a num_kv_heads mismatch, got {r:?}"),
    }
}
