//! The KV arena's host memory: one contiguous, typed allocation that the
//! CPU kernels write and read in place. It is either memory this process
//! allocated itself ([`HostArena::zeros`]) or memory someone else owns,
//! such as a region a transfer agent allocated so that a peer on the same
//! host can read it with one memcpy ([`HostArena::foreign`]); the arena
//! keeps that owner alive until it drops.
//!
//! # Aliasing
//!
//! The arena is written through `&HostArena` (the engine's model forward
//! sees the KV cache by shared reference), so it behaves like device
//! memory rather than like a Rust slice:
//!
//! - `HostArena` is `Send` but not `Sync`: every `&HostArena` lives on the
//!   one thread that owns the arena (the engine thread), and the kernels
//!   never hold a view of the arena across calls. A kernel that writes
//!   ([`crate::reshape_and_cache`]) and one that reads
//!   ([`crate::paged_attention`]) therefore never overlap in time.
//! - Outside Rust's view, a transfer layer may read blocks and write
//!   blocks concurrently with the engine (a foreign arena is registered
//!   with a transfer agent). The engine keeps the rule that makes this
//!   sound in practice: it only writes blocks it owns; peers only read
//!   blocks leased to them (which the engine does not write until the
//!   lease ends); incoming reads only write blocks owned by a sequence that
//!   is loading, which the engine neither reads nor writes until the load
//!   is done.

use std::ptr::NonNull;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::element::Element;
use crate::error::KernelError;
use crate::layout::KvCacheLayout;

/// Who keeps the arena's memory alive.
enum ArenaOwner {
    /// Zeroed memory this process allocated; `u64` words so it is aligned
    /// for every arena dtype (f32 needs 4 bytes, bf16/f16 2).
    Owned(#[allow(dead_code)] Vec<u64>),
    /// Memory another component owns (e.g. a transfer agent's region),
    /// kept alive by this handle until the arena drops.
    Foreign(#[allow(dead_code)] Arc<dyn Send + Sync>),
}

/// A KV arena in host memory: `len_elems` elements of `dtype` (f32, bf16
/// or f16) at a fixed address that never moves while the arena lives.
pub struct HostArena {
    ptr: NonNull<u8>,
    len_elems: usize,
    dtype: DType,
    owner: ArenaOwner,
}

// SAFETY: the owner is `Send` (a `Vec`, or an `Arc<dyn Send + Sync>`), and
// the pointer is into memory that owner keeps alive wherever it goes.
// Moving the arena moves the only access path with it. `HostArena` is
// deliberately not `Sync` (see the module docs): writes go through `&self`.
unsafe impl Send for HostArena {}

fn check_dtype(dtype: DType) -> Result<(), KernelError> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(()),
        dtype => Err(KernelError::UnsupportedDtype {
            op: "HostArena",
            dtype,
        }),
    }
}

impl HostArena {
    /// `len_elems` zeroed elements of `dtype` owned by this process.
    pub fn zeros(len_elems: usize, dtype: DType) -> Result<Self, KernelError> {
        check_dtype(dtype)?;
        let bytes = len_elems
            .checked_mul(dtype.size_in_bytes())
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(KernelError::ArenaTooLarge { len_elems, dtype })?;
        // `vec![0; n]` asks the allocator for zeroed pages, which large
        // allocations get lazily from the OS: untouched blocks cost nothing.
        let mut words = vec![0u64; bytes.div_ceil(8).max(1)];
        let ptr =
            NonNull::new(words.as_mut_ptr().cast::<u8>()).expect("a Vec's buffer is never null");
        Ok(HostArena {
            ptr,
            len_elems,
            dtype,
            owner: ArenaOwner::Owned(words),
        })
    }

    /// A zeroed arena owned by this process, sized for `layout`.
    pub fn for_layout(layout: &KvCacheLayout, dtype: DType) -> Result<Self, KernelError> {
        layout.validate()?;
        Self::zeros(layout.shape().iter().product(), dtype)
    }

    /// An arena owned by this process holding `values` converted to `dtype`.
    pub fn from_f32(values: &[f32], dtype: DType) -> Result<Self, KernelError> {
        let arena = Self::zeros(values.len(), dtype)?;
        fn fill<E: Element>(arena: &HostArena, values: &[f32]) {
            // SAFETY: the arena was just made and nothing else can see it.
            let dst = unsafe { arena.row_mut::<E>(0, values.len()) };
            for (d, &x) in dst.iter_mut().zip(values) {
                *d = E::from_f32(x);
            }
        }
        match dtype {
            DType::F32 => fill::<f32>(&arena, values),
            DType::BF16 => fill::<bf16>(&arena, values),
            _ => fill::<f16>(&arena, values),
        }
        Ok(arena)
    }

    /// An arena over `len_bytes` bytes at `ptr` that `owner` keeps alive.
    /// The bytes are used as they are: zero them first if that matters.
    /// Refuses a null or misaligned pointer and a length that is not a
    /// whole number of elements.
    ///
    /// # Safety
    /// `ptr .. ptr + len_bytes` must be valid for reads and writes for as
    /// long as `owner` (or a clone of it) lives, and must not be accessed
    /// through any other path except under the rule in the module docs
    /// (a transfer layer reading leased blocks and writing blocks of
    /// loading sequences).
    pub unsafe fn foreign(
        ptr: *mut u8,
        len_bytes: usize,
        dtype: DType,
        owner: Arc<dyn Send + Sync>,
    ) -> Result<Self, KernelError> {
        check_dtype(dtype)?;
        let size = dtype.size_in_bytes();
        let ptr = NonNull::new(ptr).ok_or(KernelError::ArenaNull)?;
        if !(ptr.as_ptr() as usize).is_multiple_of(size) {
            return Err(KernelError::ArenaMisaligned {
                addr: ptr.as_ptr() as usize,
                dtype,
                align: size,
            });
        }
        if !len_bytes.is_multiple_of(size) || len_bytes > isize::MAX as usize {
            return Err(KernelError::ArenaLength {
                len_bytes,
                dtype,
                elem_bytes: size,
            });
        }
        Ok(HostArena {
            ptr,
            len_elems: len_bytes / size,
            dtype,
            owner: ArenaOwner::Foreign(owner),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements of `dtype`.
    pub fn len_elems(&self) -> usize {
        self.len_elems
    }

    pub fn len_bytes(&self) -> usize {
        self.len_elems * self.dtype.size_in_bytes()
    }

    /// Address of the first byte; stable while the arena lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// True when the memory belongs to another component (see
    /// [`HostArena::foreign`]).
    pub fn is_foreign(&self) -> bool {
        matches!(self.owner, ArenaOwner::Foreign(_))
    }

    /// Every element widened to f32 (for tests and inspection).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        fn widen<E: Element>(a: &HostArena) -> Vec<f32> {
            // SAFETY: see the module docs; this thread is the arena's only
            // Rust user while the slice lives.
            unsafe { a.as_slice::<E>() }
                .iter()
                .map(|x| x.to_f32())
                .collect()
        }
        match self.dtype {
            DType::F32 => widen::<f32>(self),
            DType::BF16 => widen::<bf16>(self),
            _ => widen::<f16>(self),
        }
    }

    /// A CPU tensor copy of the arena, shaped `shape` (e.g. to upload it to
    /// a GPU in tests).
    pub fn to_tensor(&self, shape: &[usize]) -> candle_core::Result<Tensor> {
        // SAFETY (each arm): see the module docs; the slice is copied
        // before this call returns.
        match self.dtype {
            DType::F32 => {
                Tensor::from_slice(unsafe { self.as_slice::<f32>() }, shape, &Device::Cpu)
            }
            DType::BF16 => {
                Tensor::from_slice(unsafe { self.as_slice::<bf16>() }, shape, &Device::Cpu)
            }
            _ => Tensor::from_slice(unsafe { self.as_slice::<f16>() }, shape, &Device::Cpu),
        }
    }

    /// The whole arena as `E`s. Panics if `E` is not the arena's dtype.
    ///
    /// # Safety
    /// No `&mut` from [`Self::row_mut`] may be alive while the slice is,
    /// and the rule of the module docs must hold for foreign writers.
    pub(crate) unsafe fn as_slice<E: Element>(&self) -> &[E] {
        assert_eq!(E::DTYPE, self.dtype, "arena accessed as the wrong dtype");
        // SAFETY: the memory holds `len_elems` initialised `E`s (zeroed
        // or foreign bytes, every bit pattern is a valid f32/bf16/f16), is
        // aligned for `E` (checked at construction) and lives as long as
        // `self`; the caller excludes concurrent Rust writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<E>(), self.len_elems) }
    }

    /// `len` elements at element `offset`, for writing. Panics if `E` is
    /// not the arena's dtype or the range is out of bounds.
    ///
    /// # Safety
    /// No other reference into this range may be alive while the result
    /// is, and no transfer may be writing or reading it (module docs).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row_mut<E: Element>(&self, offset: usize, len: usize) -> &mut [E] {
        assert_eq!(E::DTYPE, self.dtype, "arena accessed as the wrong dtype");
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.len_elems),
            "arena row {offset}..+{len} is outside 0..{}",
            self.len_elems
        );
        // SAFETY: in bounds (checked above) and aligned (construction);
        // exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<E>().add(offset), len) }
    }
}

impl std::fmt::Debug for HostArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostArena")
            .field("ptr", &self.ptr)
            .field("len_elems", &self.len_elems)
            .field("dtype", &self.dtype)
            .field("foreign", &self.is_foreign())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn owned_arenas_are_zeroed_and_aligned_for_their_dtype() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for len in [1, 3, 1000] {
                let a = HostArena::zeros(len, dtype).unwrap();
                assert_eq!(a.as_ptr() as usize % dtype.size_in_bytes(), 0);
                assert_eq!(a.len_bytes(), len * dtype.size_in_bytes());
                assert!(!a.is_foreign());
                assert_eq!(a.to_f32_vec(), vec![0.0; len]);
            }
        }
        assert!(matches!(
            HostArena::zeros(4, DType::U8),
            Err(KernelError::UnsupportedDtype { .. })
        ));
        assert!(matches!(
            HostArena::zeros(usize::MAX / 2, DType::F32),
            Err(KernelError::ArenaTooLarge { .. })
        ));
    }

    #[test]
    fn from_f32_round_trips_through_the_dtype() {
        let xs = [1.0, -2.5, 0.125, 3.0];
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let a = HostArena::from_f32(&xs, dtype).unwrap();
            assert_eq!(a.to_f32_vec(), xs.to_vec(), "{dtype:?}");
            let t = a.to_tensor(&[2, 2]).unwrap();
            assert_eq!(t.dtype(), dtype);
            assert_eq!(
                t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
                vec![vec![1.0, -2.5], vec![0.125, 3.0]]
            );
        }
    }

    #[test]
    fn for_layout_sizes_the_arena_to_the_layout() {
        let layout = KvCacheLayout {
            num_blocks: 3,
            num_layers: 2,
            block_size: 4,
            num_kv_heads: 2,
            head_dim: 8,
        };
        let a = HostArena::for_layout(&layout, DType::BF16).unwrap();
        assert_eq!(a.len_elems(), 3 * layout.block_elems());
        let bad = KvCacheLayout {
            head_dim: 0,
            ..layout
        };
        assert!(HostArena::for_layout(&bad, DType::BF16).is_err());
    }

    /// Sets its flag when dropped; holds the memory the arena points into.
    struct Flag(Arc<AtomicBool>, #[allow(dead_code)] Vec<u32>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_foreign_owner_lives_until_the_arena_drops() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut words = vec![0u32; 16];
        let ptr = words.as_mut_ptr().cast::<u8>();
        let owner: Arc<dyn Send + Sync> = Arc::new(Flag(dropped.clone(), words));
        // SAFETY: the 64 bytes belong to `owner`'s Vec, which the arena
        // keeps alive; nothing else touches them.
        let arena = unsafe { HostArena::foreign(ptr, 64, DType::F32, owner) }.unwrap();
        assert!(arena.is_foreign());
        assert_eq!(arena.len_elems(), 16);
        // SAFETY: single-threaded test; no other view is alive.
        unsafe { arena.row_mut::<f32>(3, 2) }.copy_from_slice(&[1.5, 2.5]);
        assert_eq!(&arena.to_f32_vec()[2..6], &[0.0, 1.5, 2.5, 0.0]);
        let moved = std::thread::spawn(move || arena).join().unwrap();
        assert!(!dropped.load(Ordering::SeqCst));
        drop(moved);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn foreign_memory_must_be_non_null_aligned_and_whole_elements() {
        let keep: Arc<dyn Send + Sync> = Arc::new(());
        let mut words = vec![0u32; 4];
        let base = words.as_mut_ptr().cast::<u8>();
        // SAFETY (each call): the bytes are `words`', alive for the test.
        let null = unsafe { HostArena::foreign(std::ptr::null_mut(), 8, DType::F32, keep.clone()) };
        assert_eq!(null.unwrap_err(), KernelError::ArenaNull);
        let odd = unsafe { HostArena::foreign(base.add(2), 8, DType::F32, keep.clone()) };
        assert!(matches!(
            odd.unwrap_err(),
            KernelError::ArenaMisaligned { align: 4, .. }
        ));
        let ok16 = unsafe { HostArena::foreign(base.add(2), 8, DType::BF16, keep.clone()) };
        assert_eq!(ok16.unwrap().len_elems(), 4);
        let partial = unsafe { HostArena::foreign(base, 6, DType::F32, keep.clone()) };
        assert!(matches!(
            partial.unwrap_err(),
            KernelError::ArenaLength { len_bytes: 6, .. }
        ));
        let u8s = unsafe { HostArena::foreign(base, 8, DType::U8, keep) };
        assert!(matches!(
            u8s.unwrap_err(),
            KernelError::UnsupportedDtype { .. }
        ));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn rows_outside_the_arena_panic() {
        let a = HostArena::zeros(8, DType::F32).unwrap();
        // SAFETY: single-threaded; panics before creating the slice.
        let _ = unsafe { a.row_mut::<f32>(6, 3) };
    }
}
