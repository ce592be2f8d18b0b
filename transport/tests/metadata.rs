//! Metadata parsing never panics: valid bytes round-trip; random, truncated
//! and bit-flipped bytes are errors. (The cargo-fuzz target
//! `transport/fuzz` explores the same parser further.)

use proptest::prelude::*;
use tandem_transport::metadata::{AgentMetadata, BackendKind, MemoryKind, RegionInfo};
use tandem_transport::testing::layout;

fn sample(name: &str, rkey: Vec<u8>, address: Vec<u8>, epoch: u64) -> AgentMetadata {
    AgentMetadata {
        name: name.into(),
        epoch,
        pid: 4242,
        host_id: 7,
        backend: BackendKind::Ucx,
        worker_address: address,
        region: Some(RegionInfo {
            base_addr: 0x7f00_0000_0000,
            block_bytes: 65536,
            num_blocks: 4096,
            memory: MemoryKind::Host,
            layout: layout(8, 2),
            rkey,
        }),
    }
}

#[test]
fn every_truncation_and_bit_flip_is_refused() {
    let bytes = sample("prefill-0", vec![7; 40], vec![3; 90], 99).to_bytes();
    for cut in 0..bytes.len() {
        assert!(
            AgentMetadata::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(AgentMetadata::from_bytes(&b).is_err(), "bit {bit}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(AgentMetadata::from_bytes(&longer).is_err());
}

proptest! {
    #[test]
    fn valid_metadata_round_trips(name in "[a-z0-9-]{1,40}", rkey in proptest::collection::vec(any::<u8>(), 0..300),
                                  address in proptest::collection::vec(any::<u8>(), 0..300), epoch in any::<u64>(),
                                  with_region in any::<bool>()) {
        let mut m = sample(&name, rkey, address, epoch);
        if !with_region { m.region = None; }
        prop_assert_eq!(AgentMetadata::from_bytes(&m.to_bytes()), Ok(m));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = AgentMetadata::from_bytes(&bytes);
    }

    /// Bytes with a valid header and checksum but a random body reach the
    /// field parser itself.
    #[test]
    fn random_bodies_with_valid_checksums_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut b = b"TDMD".to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&(body.len() as u32).to_le_bytes());
        b.extend_from_slice(&body);
        let sum = xxhash_rust::xxh3::xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        let _ = AgentMetadata::from_bytes(&b);
    }
}
