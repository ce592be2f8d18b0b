//! CPU paged attention: plan work items, run them on rayon with the best
//! instruction set the machine has, combine the results.

mod block_math;
mod combine;
mod plan;
mod prefetch;
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
    let partials: Vec<Partial> = plan
        .items
        .par_iter()
        .map_init(Scratch::default, |scratch, item| {
            attend_best(inp, &plan.tiles[item.tile], item, scratch)
        })
        .collect();
    let head_dim = inp.layout.head_dim;
    let mut out = vec![E::from_f32(0.0); num_tokens * num_heads * head_dim];
    combine::write_output(&mut out, &plan, &partials, num_heads, inp.group, head_dim);
    out
}

/// Runs the AVX2+FMA build where the CPU has it (feature detection is a
/// cached load), the build target's baseline otherwise.
fn attend_best<E: Element>(
    inp: &Inputs<'_, E>,
    tile: &Tile,
    item: &WorkItem,
    s: &mut Scratch,
) -> Partial {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `attend_avx2` is built with.
        return unsafe { attend_avx2::<E>(inp, tile, item, s) };
    }
    // aarch64 always has FMA; elsewhere only if the build enables it.
    const FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));
    attend::<E, FMA>(inp, tile, item, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2<E: Element>(
    inp: &Inputs<'_, E>,
    tile: &Tile,
    item: &WorkItem,
    s: &mut Scratch,
) -> Partial {
    attend::<E, true>(inp, tile, item, s)
}
