//! CPU paged attention: plan work items, run them on rayon with the best
//! instruction set the machine has, combine the results.

mod combine;
pub(crate) mod gemm;
mod plan;
mod tile;

pub(crate) use tile::Inputs;

use crate::element::Element;
use plan::{PlanShape, Tile, WorkItem};
use rayon::prelude::*;
use tile::{attend, Partial, Scratch};

/// Computes attention for the whole batch; returns the output rows
/// `[num_tokens, num_heads, head_dim]`. Inputs must be validated.
pub(crate) fn paged_attention<E: Element>(
    inp: &Inputs<'_, E>,
    num_tokens: usize,
    num_heads: usize,
) -> Vec<E> {
    let shape = PlanShape {
        num_kv_heads: inp.layout.num_kv_heads,
        group: inp.group,
        block_size: inp.layout.block_size,
        sliding_window: inp.sliding_window,
        threads: rayon::current_num_threads(),
    };
    let plan = plan::plan(inp.meta, &shape);
    let kernel = select_kernel::<E>(inp.layout.head_dim);
    let partials: Vec<Partial> = plan
        .items
        .par_iter()
        .map_init(Scratch::default, |scratch, item| {
            kernel(inp, &plan.tiles[item.tile], item, scratch)
        })
        .collect();
    let head_dim = inp.layout.head_dim;
    let mut out = vec![E::from_f32(0.0); num_tokens * num_heads * head_dim];
    combine::write_output(&mut out, &plan, &partials, num_heads, inp.group, head_dim);
    out
}

type Kernel<E> = fn(&Inputs<'_, E>, &Tile, &WorkItem, &mut Scratch) -> Partial;

/// Picks the build for the head dim once per call: 64 and 128 get fully
/// unrolled inner loops.
fn select_kernel<E: Element>(head_dim: usize) -> Kernel<E> {
    match head_dim {
        64 => attend_best::<E, 64>,
        128 => attend_best::<E, 128>,
        _ => attend_best::<E, 0>,
    }
}

/// Runs the AVX2+FMA build where the CPU has it (feature detection is a
/// cached load), the build target's baseline otherwise.
fn attend_best<E: Element, const D: usize>(
    inp: &Inputs<'_, E>,
    tile: &Tile,
    item: &WorkItem,
    s: &mut Scratch,
) -> Partial {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `attend_avx2` is built with.
        return unsafe { attend_avx2::<E, D>(inp, tile, item, s) };
    }
    // aarch64 always has FMA; elsewhere only if the build enables it.
    const FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));
    attend::<E, FMA, D>(inp, tile, item, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2<E: Element, const D: usize>(
    inp: &Inputs<'_, E>,
    tile: &Tile,
    item: &WorkItem,
    s: &mut Scratch,
) -> Partial {
    attend::<E, true, D>(inp, tile, item, s)
}
