//! Agent metadata arrives from another process; parsing it must never
//! panic, and whatever parses must serialize back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_transport::AgentMetadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = AgentMetadata::from_bytes(data) {
        assert_eq!(meta.to_bytes(), data, "parsed metadata must re-serialize identically");
    }
});
