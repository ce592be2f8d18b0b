//! Support for cross-process tests and the transfer benchmark: a known
//! byte pattern, the child side of a peer process (serve an arena, or read
//! and verify), and the parent side (spawn, talk over stdin/stdout with
//! deadlines, kill on drop). Not used by the engine.

pub mod pattern;
pub mod peer;
pub mod process;

use crate::layout::LayoutDescriptor;

/// A synthetic bf16 layout with `block_size` 16 and `head_dim` 64, so a
/// block is `num_layers * num_kv_heads * 4096` bytes.
pub fn layout(num_layers: u32, num_kv_heads: u32) -> LayoutDescriptor {
    LayoutDescriptor {
        model_id: "tandem-test".into(),
        dtype: "bf16".into(),
        block_size: 16,
        num_layers,
        num_kv_heads,
        head_dim: 64,
    }
}

/// Lower-case hex, for passing metadata over a text pipe.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Inverse of [`to_hex`]; `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
