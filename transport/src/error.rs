//! Every way a transfer can fail, named so the caller knows what to do next.

use std::time::Duration;

/// Which side of a read a block id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agent that issues the read (destination blocks).
    Local,
    /// The peer the blocks are read from (source blocks).
    Remote,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

/// Why metadata bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Fewer bytes than the fixed header and checksum.
    #[error("{0} bytes is shorter than any metadata")]
    TooShort(usize),
    /// The bytes do not start with the metadata magic.
    #[error("not tandem agent metadata (bad magic)")]
    BadMagic,
    /// Written by an incompatible tandem version.
    #[error("metadata version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// The body length disagrees with the byte count.
    #[error("body length {declared} does not match the {actual} bytes received (truncated?)")]
    LengthMismatch {
        /// Length in the header.
        declared: usize,
        /// Length actually present.
        actual: usize,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error("checksum mismatch (damaged bytes)")]
    ChecksumMismatch,
    /// A field ends past the end of the body.
    #[error("field `{field}` is truncated")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A field is longer than allowed.
    #[error("field `{field}` is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A field holds a value outside its domain.
    #[error("field `{field}` has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// Bytes left after the last field.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
}

/// Errors of the transfer layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer's metadata bytes could not be parsed.
    #[error("peer metadata rejected: {0}; fetch the metadata again from the peer (it may be damaged or from another tandem version)")]
    Metadata(#[from] MetadataError),

    /// Prefill and decode describe their KV cache differently.
    #[error("KV layout mismatch in `{field}`: local {local}, remote {remote}; prefill and decode workers must serve the same model with the same KV cache settings")]
    LayoutMismatch {
        /// The first field that differs (model_id, dtype, block_size, ...).
        field: &'static str,
        /// This agent's value.
        local: String,
        /// The peer's value.
        remote: String,
    },

    /// Metadata (or a handle) from an older incarnation of a peer.
    #[error("stale metadata for agent `{agent}`: epoch {offered} is older than the known epoch {known}; the peer restarted, so its blocks are gone: ask it for fresh metadata and recompute")]
    StaleEpoch {
        /// The peer's agent name.
        agent: String,
        /// The epoch of the rejected metadata or handle.
        offered: u64,
        /// The newest epoch seen for this peer.
        known: u64,
    },

    /// `read` was given a peer that `add_remote` never loaded.
    #[error("unknown remote agent `{0}`: load its metadata with Agent::add_remote first")]
    UnknownRemote(String),

    /// The peer has no registered region to read from.
    #[error("remote agent `{0}` has registered no memory: it must call Agent::register before publishing its metadata")]
    RemoteHasNoRegion(String),

    /// This agent has no registered region to read into.
    #[error("agent `{0}` has no registered region: call Agent::register before reading")]
    NoLocalRegion(String),

    /// An agent holds one KV region; a second `register` is refused.
    #[error("agent `{0}` already has a registered region (one KV arena per agent)")]
    AlreadyRegistered(String),

    /// An agent name that cannot be published in metadata.
    #[error("invalid agent name {0:?}: it must be 1 to 256 bytes")]
    InvalidName(String),

    /// A region descriptor is unusable (null base, zero sizes, overflow).
    #[error("invalid region: {0}")]
    InvalidRegion(String),

    /// A block id outside the region; refused before any transfer starts.
    #[error("{side} block id {block} is out of range: the {side} region has {num_blocks} blocks")]
    BlockOutOfRange {
        /// Local or remote.
        side: Side,
        /// The offending id.
        block: u32,
        /// Blocks in that region.
        num_blocks: u32,
    },

    /// Two pairs write the same local block: the result would be undefined.
    #[error("local block {0} is the destination of two pairs in one read")]
    DuplicateLocalBlock(u32),

    /// The notification payload is larger than one eager message.
    #[error("notification of {len} bytes exceeds the {max}-byte limit")]
    NotifyTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The deadline passed before the read completed.
    #[error("read from `{peer}` did not complete within {after:?}; the peer is unresponsive or gone: treat its blocks as lost")]
    Timeout {
        /// The peer's agent name.
        peer: String,
        /// The deadline the read had.
        after: Duration,
    },

    /// The connection to the peer failed (process died, socket reset).
    #[error("peer `{peer}` failed: {detail}; its blocks are lost: recompute them or load fresh metadata after it restarts")]
    PeerFailed {
        /// The peer's agent name.
        peer: String,
        /// What the transport reported.
        detail: String,
    },

    /// A UCX call failed.
    #[error("UCX {call} failed: {status}")]
    Ucx {
        /// The UCX function.
        call: &'static str,
        /// `ucs_status_string` of the returned status.
        status: String,
    },

    /// The agent's backend has stopped (agent dropped or progress thread gone).
    #[error("transfer backend of agent `{0}` has shut down")]
    ShutDown(String),

    /// The metadata names a backend this agent does not run.
    #[error("peer `{peer}` uses backend {remote}, this agent uses {local}: both sides must use the same backend")]
    BackendMismatch {
        /// The peer's agent name.
        peer: String,
        /// This agent's backend.
        local: &'static str,
        /// The peer's backend.
        remote: &'static str,
    },

    /// A CUDA driver call failed (feature `cuda`).
    #[error("CUDA: {0}")]
    Cuda(String),
}

/// Result alias of this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
