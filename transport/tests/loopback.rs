//! The agent API over the in-process loopback backend: validation,
//! coalesced reads, notifications, epochs, layout handshake.

use std::time::Duration;

use futures::StreamExt;
use tandem_transport::testing::peer::{read_verified, Arena, PeerOptions};
use tandem_transport::testing::{layout, pattern};
use tandem_transport::{Agent, BackendConfig, Region, Side, TransportError};

fn opts(name: &str, blocks: u32) -> PeerOptions {
    PeerOptions {
        name: name.into(),
        transports: None,
        num_blocks: blocks,
        num_layers: 2,
        num_kv_heads: 1,
        seed: 42,
        pairs: 48,
        batch: 16,
        allocate: false,
    }
}

/// A patterned "prefill" arena and an empty "decode" arena that loaded it.
fn pair(tag: &str) -> (Arena, Arena, tandem_transport::RemoteAgent) {
    let prefill = Arena::new(&opts(&format!("prefill-{tag}"), 64), Some(42)).unwrap();
    let decode = Arena::new(&opts(&format!("decode-{tag}"), 64), None).unwrap();
    let remote = decode.agent.add_remote(&prefill.agent.metadata()).unwrap();
    (prefill, decode, remote)
}

#[test]
fn random_pairs_arrive_intact_and_notify_the_peer() {
    let (prefill, mut decode, remote) = pair("random");
    let bytes = read_verified(&mut decode, &remote, 64, &opts("x", 64)).unwrap();
    assert_eq!(bytes, 48 * 8192);
    let notes = prefill.agent.notifications();
    for _ in 0..3 {
        let n = notes
            .recv_timeout(Duration::from_secs(1))
            .expect("a notification per read");
        assert_eq!(n.from, "decode-random");
        assert_eq!(n.from_epoch, decode.agent.epoch());
        assert_eq!(n.payload, b"read-done");
    }
    assert!(notes.try_recv().is_none());
}

#[test]
fn adjacent_blocks_move_as_one_run() {
    let (_prefill, decode, remote) = pair("runs");
    let pairs: Vec<(u32, u32)> = (10..20).map(|b| (b, b + 30)).chain([(3, 0)]).collect();
    let done = decode
        .agent
        .read(&remote, &pairs, None)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.runs, 2);
    assert_eq!(done.bytes, 11 * 8192);
}

#[test]
fn bad_block_ids_are_refused_before_any_byte_moves() {
    let (_prefill, decode, remote) = pair("range");
    type Expected = fn(&TransportError) -> bool;
    let cases: [(&[(u32, u32)], Expected); 3] = [
        (&[(0, 0), (64, 1)], |e| {
            matches!(
                e,
                TransportError::BlockOutOfRange {
                    side: Side::Remote,
                    block: 64,
                    num_blocks: 64
                }
            )
        }),
        (&[(0, 0), (1, 99)], |e| {
            matches!(
                e,
                TransportError::BlockOutOfRange {
                    side: Side::Local,
                    block: 99,
                    ..
                }
            )
        }),
        (&[(0, 5), (1, 5)], |e| {
            matches!(e, TransportError::DuplicateLocalBlock(5))
        }),
    ];
    for (pairs, expected) in cases {
        let err = decode
            .agent
            .read(&remote, pairs, None)
            .err()
            .expect("refused");
        assert!(expected(&err), "{pairs:?}: {err}");
    }
    // The valid pair of each refused list was not copied either.
    assert!(decode.words().iter().all(|&w| w == 0));
}

#[test]
fn layout_mismatch_names_the_field() {
    let prefill = Arena::new(&opts("prefill-layout", 8), Some(1)).unwrap();
    let mut o = opts("decode-layout", 8);
    o.num_layers = 1;
    o.num_kv_heads = 2; // same block bytes, different shape
    let decode = Arena::new(&o, None).unwrap();
    match decode.agent.add_remote(&prefill.agent.metadata()) {
        Err(TransportError::LayoutMismatch {
            field,
            local,
            remote,
        }) => {
            assert_eq!(
                (field, local.as_str(), remote.as_str()),
                ("num_layers", "1", "2")
            );
        }
        r => panic!("expected a layout mismatch, got {r:?}"),
    }
}

#[test]
fn stale_epochs_are_refused() {
    let decode = Arena::new(&opts("decode-epoch", 8), None).unwrap();
    let old = Arena::new(&opts("prefill-epoch", 8), Some(1)).unwrap();
    let old_meta = old.agent.metadata();
    let old_handle = decode.agent.add_remote(&old_meta).unwrap();
    drop(old);
    let new = Arena::new(&opts("prefill-epoch", 8), Some(2)).unwrap();
    let new_handle = decode.agent.add_remote(&new.agent.metadata()).unwrap();
    assert!(new_handle.epoch() > old_handle.epoch());
    match decode.agent.add_remote(&old_meta) {
        Err(TransportError::StaleEpoch {
            agent,
            offered,
            known,
        }) => {
            assert_eq!(agent, "prefill-epoch");
            assert_eq!((offered, known), (old_handle.epoch(), new_handle.epoch()));
        }
        r => panic!("expected StaleEpoch, got {r:?}"),
    }
    assert!(matches!(
        decode.agent.read(&old_handle, &[(0, 0)], None),
        Err(TransportError::StaleEpoch { .. })
    ));
    decode
        .agent
        .read(&new_handle, &[(0, 0)], None)
        .unwrap()
        .wait()
        .unwrap();
    assert!(pattern::check(&decode.words()[..1024], 0, 2).is_ok());
}

#[test]
fn damaged_metadata_is_an_error() {
    let (prefill, decode, _) = pair("damaged");
    let meta = prefill.agent.metadata();
    for cut in [0, 1, 9, meta.len() / 2, meta.len() - 1] {
        assert!(matches!(
            decode.agent.add_remote(&meta[..cut]),
            Err(TransportError::Metadata(_))
        ));
    }
    let mut flipped = meta.clone();
    flipped[meta.len() / 2] ^= 0x10;
    assert!(matches!(
        decode.agent.add_remote(&flipped),
        Err(TransportError::Metadata(_))
    ));
}

#[test]
fn a_dropped_peer_is_an_error() {
    let (prefill, decode, remote) = pair("dropped");
    drop(prefill);
    let err = decode
        .agent
        .read(&remote, &[(0, 0)], None)
        .err()
        .expect("peer gone");
    assert!(matches!(err, TransportError::PeerFailed { .. }), "{err}");
}

#[test]
fn misuse_is_explained() {
    let (_prefill, decode, remote) = pair("misuse");
    let big = vec![0u8; tandem_transport::MAX_NOTIFY + 1];
    assert!(matches!(
        decode.agent.read(&remote, &[], Some(&big)),
        Err(TransportError::NotifyTooLarge { .. })
    ));
    let bare = Agent::new("bare", BackendConfig::Loopback).unwrap();
    let r = bare.add_remote(&decode.agent.metadata()).unwrap();
    assert!(matches!(
        bare.read(&r, &[(0, 0)], None),
        Err(TransportError::NoLocalRegion(_))
    ));
    let mut words = vec![0u64; 1024];
    // SAFETY (both): the regions are refused, so nothing is ever registered.
    let null = unsafe { Region::host(std::ptr::null_mut(), 8192, 1, layout(2, 1)) };
    assert!(matches!(null, Err(TransportError::InvalidRegion(_))));
    let wrong_size = unsafe { Region::host(words.as_mut_ptr() as *mut u8, 4096, 1, layout(2, 1)) };
    assert!(matches!(wrong_size, Err(TransportError::InvalidRegion(_))));
}

#[test]
fn read_and_notifications_work_as_futures() {
    let (prefill, decode, remote) = pair("async");
    futures::executor::block_on(async {
        let done = decode
            .agent
            .read(&remote, &[(1, 2)], Some(b"hi"))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(done.bytes, 8192);
        let n = prefill.agent.notifications().next().await.unwrap();
        assert_eq!(n.payload, b"hi");
    });
}
