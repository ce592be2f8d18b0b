//! A registrable region: one KV arena, described by its base address and
//! block geometry plus the layout handshake. The transport does not know
//! candle or the engine's tensors; the engine adapts its arena to this.

use crate::error::{Result, TransportError};
use crate::layout::LayoutDescriptor;
use crate::metadata::MemoryKind;

/// Where a region's bytes live, as given by the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionMemory {
    /// Host memory (any allocation: Vec, mmap, candle CPU storage).
    Host,
    /// CUDA device memory on device `ordinal` (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda {
        /// CUDA device ordinal.
        ordinal: usize,
    },
}

/// A contiguous arena of `num_blocks` blocks of `block_bytes` each.
#[derive(Debug, Clone)]
pub struct Region {
    pub(crate) base: u64,
    pub(crate) block_bytes: u64,
    pub(crate) num_blocks: u32,
    pub(crate) layout: LayoutDescriptor,
    pub(crate) memory: RegionMemory,
}

impl Region {
    /// Describes host memory at `base`.
    ///
    /// # Safety
    /// `base .. base + block_bytes * num_blocks` must be valid for reads and
    /// writes until the `Agent` it is registered with is dropped: peers read
    /// it and incoming reads write it, outside Rust's view. The owner must
    /// not rely on its contents while a read into it is in flight.
    pub unsafe fn host(
        base: *mut u8,
        block_bytes: usize,
        num_blocks: u32,
        layout: LayoutDescriptor,
    ) -> Result<Region> {
        Self::new(
            base as u64,
            block_bytes,
            num_blocks,
            layout,
            RegionMemory::Host,
        )
    }

    /// Describes CUDA device memory (a cudarc `CUdeviceptr`) on device `ordinal`.
    ///
    /// # Safety
    /// As for [`Region::host`]: the device allocation must outlive the agent.
    #[cfg(feature = "cuda")]
    pub unsafe fn cuda(
        device_ptr: u64,
        ordinal: usize,
        block_bytes: usize,
        num_blocks: u32,
        layout: LayoutDescriptor,
    ) -> Result<Region> {
        Self::new(
            device_ptr,
            block_bytes,
            num_blocks,
            layout,
            RegionMemory::Cuda { ordinal },
        )
    }

    fn new(
        base: u64,
        block_bytes: usize,
        num_blocks: u32,
        layout: LayoutDescriptor,
        memory: RegionMemory,
    ) -> Result<Region> {
        if base == 0 {
            return Err(TransportError::InvalidRegion("base address is null".into()));
        }
        let len = check_geometry(block_bytes, num_blocks, &layout)?;
        if base.checked_add(len).is_none() {
            return Err(TransportError::InvalidRegion(format!(
                "{len} bytes at {base:#x} overflow the address space"
            )));
        }
        Ok(Region {
            base,
            block_bytes: block_bytes as u64,
            num_blocks,
            layout,
            memory,
        })
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.block_bytes * u64::from(self.num_blocks)
    }

    /// Always false: a region has at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The layout handshake descriptor.
    pub fn layout(&self) -> &LayoutDescriptor {
        &self.layout
    }
}

/// Total bytes of `num_blocks` blocks, if the geometry is usable and agrees
/// with the layout.
pub(crate) fn check_geometry(
    block_bytes: usize,
    num_blocks: u32,
    layout: &LayoutDescriptor,
) -> Result<u64> {
    let invalid = |m: String| Err(TransportError::InvalidRegion(m));
    if block_bytes == 0 || num_blocks == 0 {
        return invalid(format!(
            "{num_blocks} blocks of {block_bytes} bytes: both must be non-zero"
        ));
    }
    let block_bytes = block_bytes as u64;
    let Some(len) = block_bytes
        .checked_mul(u64::from(num_blocks))
        .filter(|&len| len <= isize::MAX as u64)
    else {
        return invalid(format!(
            "{num_blocks} blocks of {block_bytes} bytes are too many"
        ));
    };
    if let Some(expected) = layout.block_bytes() {
        if expected != block_bytes {
            return invalid(format!(
                "the layout gives {expected} bytes per block, the region {block_bytes}"
            ));
        }
    }
    Ok(len)
}

/// A KV arena allocated by the agent's backend (`Agent::allocate_region`).
/// The memory belongs to the agent and is freed when the agent is dropped.
#[derive(Debug)]
pub struct AllocatedRegion {
    pub(crate) base: *mut u8,
    pub(crate) len: usize,
    pub(crate) desc: MemoryDescriptor,
}

// SAFETY: a plain address range; accessing it is the unsafe part, and that
// needs `as_mut_ptr`, whose users take on the aliasing rules.
unsafe impl Send for AllocatedRegion {}
// SAFETY: as above.
unsafe impl Sync for AllocatedRegion {}

impl AllocatedRegion {
    /// Start of block 0. Valid for `len()` bytes until the agent is dropped.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.base
    }
    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: a region has at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// What was registered.
    pub fn descriptor(&self) -> &MemoryDescriptor {
        &self.desc
    }
}

/// What `Agent::register` made of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDescriptor {
    /// Address peers read from (the staging buffer on the host-staged path).
    pub base_addr: u64,
    /// Bytes per block.
    pub block_bytes: u64,
    /// Blocks.
    pub num_blocks: u32,
    /// Memory kind peers reach.
    pub memory: MemoryKind,
    /// True when a CUDA region is served through pinned host staging
    /// (the UCX build has no CUDA support): call `Agent::publish_blocks`
    /// before peers read.
    pub host_staged: bool,
}
