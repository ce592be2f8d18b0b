//! Turns work-item partial states into output rows: normalises a tile
//! computed in one piece, or merges a partitioned tile's pieces by
//! rescaling each to the common maximum first.

use super::plan::Plan;
use super::tile::Partial;
use crate::element::Element;

/// Writes every tile's rows into `out` (`[num_tokens, num_heads, head_dim]`).
/// `partials[i]` belongs to `plan.items[i]`.
pub(crate) fn write_output<E: Element>(
    out: &mut [E],
    plan: &Plan,
    partials: &[Partial],
    num_heads: usize,
    group: usize,
    head_dim: usize,
) {
    let d = head_dim;
    let mut weights = Vec::new();
    let mut row_f32 = vec![0.0f32; d];
    for tile in &plan.tiles {
        let parts = &partials[tile.items.clone()];
        for (t, token) in tile.q_rows.clone().enumerate() {
            for h in 0..group {
                let qi = t * group + h;
                // Rescale each part to the common max; a part that saw no
                // key (l = 0, m = -inf) weighs nothing.
                let m = parts
                    .iter()
                    .map(|p| p.m[qi])
                    .fold(f32::NEG_INFINITY, f32::max);
                weights.clear();
                weights.extend(parts.iter().map(|p| {
                    if p.l[qi] > 0.0 {
                        (p.m[qi] - m).exp()
                    } else {
                        0.0
                    }
                }));
                let l: f32 = parts.iter().zip(&weights).map(|(p, w)| p.l[qi] * w).sum();
                let inv_l = if l > 0.0 { 1.0 / l } else { 0.0 };
                row_f32.fill(0.0);
                for (p, w) in parts.iter().zip(&weights) {
                    let w = w * inv_l;
                    for (r, a) in row_f32.iter_mut().zip(&p.acc[qi * d..][..d]) {
                        *r += w * a;
                    }
                }
                let head = tile.kv_head * group + h;
                let row = &mut out[(token * num_heads + head) * d..][..d];
                for (o, &r) in row.iter_mut().zip(&row_f32) {
                    *o = E::from_f32(r);
                }
            }
        }
    }
}
