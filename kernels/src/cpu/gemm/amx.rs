//! The AMX-BF16 build of the packed kernel, for bf16 activations against
//! bf16 weights (f32 sums). One `tdpbf16ps` multiplies a 16 × 32 bf16 tile
//! of activations by a 32 × 16 tile of weights into a 16 × 16 f32 tile:
//! 8,192 multiply-adds, where an AVX-512 FMA does 16. A register block is
//! 2 × 2 accumulator tiles (32 rows × 32 columns), fed per 32-wide k step by
//! two activation tiles loaded where the rows lie (row stride `k`) and two
//! weight tiles the task packed into the pair-interleaved ("VNNI") layout
//! the instruction reads: tile row `r` holds, for each of 16 columns, the
//! weights at k `2r` and `2r + 1` side by side.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline
//! assembly. Tile registers are per-thread architectural state that no
//! compiled code touches: every task loads the tile configuration before
//! its first block.

/// bf16 values per tile row (64 bytes): the k step of one `tdpbf16ps`.
pub(super) const KSTEP: usize = 32;
/// Rows (and columns) of one accumulator tile.
pub(super) const TILE: usize = 16;
/// Rows and columns of the 2 × 2-tile register block.
pub(super) const BLOCK: usize = 2 * TILE;

/// Whether this CPU runs AMX-BF16 and the kernel let the process use the
/// tile registers (Linux grants them on request, once per process).
pub(super) fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(imp::request)
}

/// One register block: `c` (32 rows × 32 f32 columns at byte stride
/// `c_stride`) += `x` (32 rows of `ksteps · 32` bf16 at byte stride
/// `x_stride`) · the two packed panels `b` (each `ksteps` tiles).
pub(super) struct Block {
    pub(super) x: *const u16,
    pub(super) x_stride: usize,
    pub(super) b: [*const u16; 2],
    pub(super) ksteps: usize,
    pub(super) c: *mut f32,
    pub(super) c_stride: usize,
}

#[cfg(target_arch = "x86_64")]
pub(super) use imp::{configure, run_block};

/// The AMX-BF16 compute roof of this thread, for benchmarks: FLOPs done by
/// `iters` rounds of four register-only `tdpbf16ps` (no memory traffic), or
/// `None` where AMX is not usable. Time it around the call.
pub fn peak_loop(iters: u64) -> Option<f64> {
    if !usable() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AMX is usable (checked above).
        unsafe { imp::peak(iters) };
        Some((iters * 4 * (TILE * TILE * KSTEP) as u64 * 2) as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn request() -> bool {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::{Block, KSTEP, TILE};
    use std::arch::asm;

    /// Tile registers 0–3 accumulate, 4–5 hold activations, 6–7 weights;
    /// every tile is 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// CPUID leaf 7 reports AMX-TILE and AMX-BF16; Linux then wants
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)` before the first tile
    /// instruction (it enlarges the thread's saved state).
    pub(super) fn request() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        if std::arch::x86_64::__cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        if !(amx_bf16 && amx_tile && is_x86_feature_detected!("avx512f")) {
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a plain syscall that only changes which xsave features
            // this process may use; it reads no memory of ours.
            let granted = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            granted == 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Loads the tile configuration on this thread.
    ///
    /// # Safety
    /// [`super::usable`] returned true.
    pub(in super::super) unsafe fn configure() {
        // SAFETY: `CONFIG` is a valid palette-1 configuration, 64-byte
        // aligned; the caller checked that AMX is usable.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
        }
    }

    /// `iters` rounds of four independent tile products on zeroed tiles.
    ///
    /// # Safety
    /// AMX is usable.
    pub(super) unsafe fn peak(iters: u64) {
        // SAFETY: AMX is usable; the loop touches tile registers only.
        unsafe {
            configure();
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                options(nostack, nomem),
            );
            for _ in 0..iters {
                asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nostack, nomem),
                );
            }
        }
    }

    /// Runs one [`Block`].
    ///
    /// # Safety
    /// [`configure`] ran on this thread; `x` has 32 readable rows of
    /// `ksteps · 32` bf16, each panel of `b` `ksteps · 512` bf16, and `c` 32
    /// rows of 32 f32 that nothing else accesses during the call.
    pub(in super::super) unsafe fn run_block(blk: &Block) {
        let (xs, cs) = (blk.x_stride, blk.c_stride);
        let x1 = blk.x.wrapping_byte_add(TILE * xs);
        let c01 = blk.c.wrapping_add(TILE);
        let c10 = blk.c.wrapping_byte_add(TILE * cs);
        let c11 = c10.wrapping_add(TILE);
        // SAFETY: the caller vouches for every address; tile loads and
        // stores touch 16 rows of 64 bytes at the given stride.
        unsafe {
            asm!(
                "tileloadd tmm0, [{c00} + {cs} * 1]",
                "tileloadd tmm1, [{c01} + {cs} * 1]",
                "tileloadd tmm2, [{c10} + {cs} * 1]",
                "tileloadd tmm3, [{c11} + {cs} * 1]",
                c00 = in(reg) blk.c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                cs = in(reg) cs, options(nostack, readonly),
            );
            for step in 0..blk.ksteps {
                let (xa, xb) = (blk.x.add(step * KSTEP), x1.add(step * KSTEP));
                let (b0, b1) = (
                    blk.b[0].add(step * KSTEP * TILE),
                    blk.b[1].add(step * KSTEP * TILE),
                );
                asm!(
                    "tileloadd tmm4, [{xa} + {xs} * 1]",
                    "tileloadd tmm5, [{xb} + {xs} * 1]",
                    "tileloadd tmm6, [{b0} + {bs} * 1]",
                    "tileloadd tmm7, [{b1} + {bs} * 1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    xa = in(reg) xa, xb = in(reg) xb, b0 = in(reg) b0, b1 = in(reg) b1,
                    xs = in(reg) xs, bs = in(reg) 64usize, options(nostack, readonly),
                );
            }
            asm!(
                "tilestored [{c00} + {cs} * 1], tmm0",
                "tilestored [{c01} + {cs} * 1], tmm1",
                "tilestored [{c10} + {cs} * 1], tmm2",
                "tilestored [{c11} + {cs} * 1], tmm3",
                c00 = in(reg) blk.c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                cs = in(reg) cs, options(nostack),
            );
        }
    }
}
