//! Typed errors for the kernels. They reach callers wrapped in
//! `candle_core::Error::Wrapped`, so engine code can downcast when it wants
//! to tell bad metadata (a scheduler bug) from an unsupported configuration.

use candle_core::DType;
use thiserror::Error;

/// Everything the kernels refuse, found before any memory is touched.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    #[error("{op}: dtype {dtype:?} is not supported (use f32, bf16 or f16)")]
    UnsupportedDtype { op: &'static str, dtype: DType },

    #[error("{op}: {what} has dtype {dtype:?}, which is not supported (use f32, bf16 or f16)")]
    UnsupportedOperandDtype {
        op: &'static str,
        what: &'static str,
        dtype: DType,
    },

    #[error("{op}: {what} has dtype {got:?}, expected {expected:?} (the KV arena's dtype)")]
    DtypeMismatch {
        op: &'static str,
        what: &'static str,
        expected: DType,
        got: DType,
    },

    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },

    #[error("{op}: {what} must be {requirement}")]
    BadStrides {
        op: &'static str,
        what: &'static str,
        requirement: &'static str,
    },

    #[error("{op}: {what} must be a CPU tensor (these are the CPU kernels; on a GPU use the `cuda` module)")]
    NotOnCpu {
        op: &'static str,
        what: &'static str,
    },

    #[error("KV arena: the memory's address is null")]
    ArenaNull,

    #[error("KV arena: address {addr:#x} is not aligned to {align} bytes, which {dtype:?} needs")]
    ArenaMisaligned {
        addr: usize,
        dtype: DType,
        align: usize,
    },

    #[error("KV arena: {len_bytes} bytes are not a whole number of {dtype:?} elements ({elem_bytes} bytes each)")]
    ArenaLength {
        len_bytes: usize,
        dtype: DType,
        elem_bytes: usize,
    },

    #[error("KV arena: {len_elems} elements of {dtype:?} do not fit in the address space; use a smaller KV cache")]
    ArenaTooLarge { len_elems: usize, dtype: DType },

    #[error("KV cache layout field `{field}` is 0; every dimension must be at least 1")]
    EmptyLayoutDim { field: &'static str },

    #[error("KV cache layout {shape:?} has more elements than fit in usize")]
    LayoutTooLarge { shape: [usize; 6] },

    #[error("{op}: layer {layer} is out of range (the arena has {num_layers} layers)")]
    LayerOutOfRange {
        op: &'static str,
        layer: usize,
        num_layers: usize,
    },

    #[error("reshape_and_cache: slot_mapping has {got} entries but k/v have {expected} tokens")]
    SlotMappingLength { expected: usize, got: usize },

    #[error("reshape_and_cache: token {token} has slot {slot}, outside 0..{num_slots} (use -1 to skip a token)")]
    SlotOutOfRange {
        token: usize,
        slot: i64,
        num_slots: usize,
    },

    #[error(
        "paged_attention: num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}"
    )]
    HeadsNotMultiple {
        num_heads: usize,
        num_kv_heads: usize,
    },

    #[error("paged_attention: softmax_scale {0} is not a finite number")]
    BadSoftmaxScale(f32),

    #[error("paged_attention: sliding_window must be at least 1, got 0")]
    ZeroSlidingWindow,

    #[error("attention metadata: {field} has {got} entries, expected {expected}")]
    MetadataLength {
        field: &'static str,
        expected: usize,
        got: usize,
    },

    #[error("attention metadata: query_start_loc {reason}")]
    BadQueryStartLoc { reason: String },

    #[error("attention metadata: seq {seq} has query_len {query_len} > context_len {context_len}")]
    QueryLongerThanContext {
        seq: usize,
        query_len: usize,
        context_len: usize,
    },

    #[error("attention metadata: seq {seq} has context_len {context_len} but its block table holds at most {capacity} tokens ({max_blocks_per_seq} blocks of {block_size})")]
    ContextTooLong {
        seq: usize,
        context_len: usize,
        capacity: usize,
        max_blocks_per_seq: usize,
        block_size: usize,
    },

    #[error("attention metadata: seq {seq} block table entry {index} is block {block}, outside 0..{num_blocks}")]
    BlockIdOutOfRange {
        seq: usize,
        index: usize,
        block: u32,
        num_blocks: usize,
    },
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}
