//! Agent metadata arrives from another process; parsing it must never
//! panic, and whatever parses must serialize back to the same bytes.
//! Each input is tried twice: as raw bytes, and as a body wrapped in a
//! valid header and checksum, so mutations reach the field parser instead
//! of stopping at the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_transport::AgentMetadata;

fn check(bytes: &[u8]) {
    if let Ok(meta) = AgentMetadata::from_bytes(bytes) {
        assert_eq!(meta.to_bytes(), bytes, "parsed metadata must re-serialize identically");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut wrapped = b"TDMD".to_vec();
    wrapped.extend_from_slice(&1u16.to_le_bytes());
    wrapped.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wrapped.extend_from_slice(data);
    let sum = xxhash_rust::xxh3::xxh3_64(&wrapped);
    wrapped.extend_from_slice(&sum.to_le_bytes());
    check(&wrapped);
});
