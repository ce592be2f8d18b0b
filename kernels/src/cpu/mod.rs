//! CPU paged attention: plan work items, run them on rayon with the best
//! instruction set the machine has, combine the results.

mod block_math;
mod combine;
pub(crate) mod gemm;
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
        head_dim: inp.layout.head_dim,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::RowView;
    use crate::layout::KvCacheLayout;
    use crate::metadata::AttentionMetadata;
    use candle_core::Layout;

    /// The build every machine can run agrees with the AVX2 one (the
    /// integration tests only reach the latter on this hardware).
    #[test]
    fn portable_and_dispatched_kernels_agree() {
        let layout = KvCacheLayout {
            num_blocks: 6,
            num_layers: 1,
            block_size: 16,
            num_kv_heads: 2,
            head_dim: 20,
        };
        let arena: Vec<f32> = (0..layout.shape().iter().product::<usize>())
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let q: Vec<f32> = (0..5 * 4 * 20)
            .map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let meta = AttentionMetadata {
            query_start_loc: vec![0, 4, 5],
            context_lens: vec![40, 50],
            block_tables: vec![5, 0, 3, 1, 4, 2, 0, 0],
            max_blocks_per_seq: 4,
            slot_mapping: vec![],
        };
        let inp = Inputs {
            q: &q,
            q_view: RowView::new("test", "q", &Layout::contiguous((5, 4, 20))).unwrap(),
            arena: &arena,
            layout: &layout,
            layer: 0,
            meta: &meta,
            softmax_scale: 0.3,
            sliding_window: Some(30),
            group: 2,
        };
        let shape = PlanShape {
            num_kv_heads: 2,
            group: 2,
            head_dim: 20,
            block_size: 16,
            sliding_window: Some(30),
            threads: 1,
        };
        let plan = plan::plan(&meta, &shape);
        let mut scratch = Scratch::default();
        for item in &plan.items {
            let tile = &plan.tiles[item.tile];
            let a = attend::<f32, false>(&inp, tile, item, &mut scratch);
            let b = attend_best(&inp, tile, item, &mut scratch);
            let (xs, ys) = ([&a.m, &a.l, &a.acc], [&b.m, &b.l, &b.acc]);
            for (x, y) in xs.into_iter().flatten().zip(ys.into_iter().flatten()) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
    }
}
