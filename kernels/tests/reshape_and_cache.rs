//! reshape_and_cache writes exactly the slots it is told to, nothing else.

mod common;

use candle_core::{DType, Tensor};
use common::{random_values, round_trip, tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tandem_kernels::{reshape_and_cache, HostArena, KernelError, KvCacheLayout, K, V};

const LAYOUT: KvCacheLayout = KvCacheLayout {
    num_blocks: 5,
    num_layers: 3,
    block_size: 4,
    num_kv_heads: 2,
    head_dim: 8,
};
const SENTINEL: f32 = -7.0;

fn arena(dtype: DType) -> HostArena {
    let n: usize = LAYOUT.shape().iter().product();
    HostArena::from_f32(&vec![SENTINEL; n], dtype).unwrap()
}

fn kv(n: usize, dtype: DType, seed: u64) -> (Vec<f32>, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vals = round_trip(&random_values(&mut rng, n * 16), dtype);
    let t = tensor(&vals, &[n, 2, 8], dtype);
    (vals, t)
}

/// Every written row lands at `elem_offset(slot / bs, layer, kv, slot % bs,
/// head)`; skipped tokens and every other element (other layers included)
/// keep the sentinel.
#[test]
fn writes_land_at_layout_offsets_and_nothing_else_changes() {
    let slots = [13i64, -1, 0, 19, 6, -1, 7];
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let a = arena(dtype);
        let (kvals, k) = kv(slots.len(), dtype, 1);
        let (vvals, v) = kv(slots.len(), dtype, 2);
        reshape_and_cache(&a, &k, &v, &LAYOUT, 1, &slots).unwrap();
        let got = a.to_f32_vec();
        let mut want = vec![SENTINEL; got.len()];
        for (t, &slot) in slots.iter().enumerate().filter(|(_, &s)| s >= 0) {
            let (block, off) = (slot as usize / 4, slot as usize % 4);
            for h in 0..2 {
                for (kv, vals) in [(K, &kvals), (V, &vvals)] {
                    let o = LAYOUT.elem_offset(block, 1, kv, off, h);
                    want[o..o + 8].copy_from_slice(&vals[(t * 2 + h) * 8..][..8]);
                }
            }
        }
        assert_eq!(got, want, "{dtype:?}");
    }
}

/// k/v may be strided views, e.g. narrowed out of a fused qkv tensor.
#[test]
fn strided_views_are_read_correctly() {
    let (kvals, k) = kv(3, DType::F32, 3);
    let fused = Tensor::cat(&[&k.zeros_like().unwrap(), &k], 1).unwrap();
    let k_view = fused.narrow(1, 2, 2).unwrap();
    assert!(!k_view.is_contiguous());
    let a = arena(DType::F32);
    reshape_and_cache(&a, &k_view, &k_view, &LAYOUT, 0, &[5, 6, 7]).unwrap();
    let got = a.to_f32_vec();
    let o = LAYOUT.elem_offset(1, 0, K, 3, 1);
    assert_eq!(&got[o..o + 8], &kvals[(2 * 2 + 1) * 8..][..8]);
}

/// candle keeps wrapped errors as `dyn Display`, so the typed error is
/// checked through its message.
fn assert_refused(r: candle_core::Result<()>, want: KernelError) {
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&want.to_string()), "got: {msg}\nwant: {want}");
}

#[test]
fn bad_inputs_are_refused_and_leave_the_arena_untouched() {
    let op = "reshape_and_cache";
    let a = arena(DType::F32);
    let (_, k) = kv(2, DType::F32, 4);
    let run = |k: &Tensor, v: &Tensor, layer: usize, slots: &[i64]| {
        reshape_and_cache(&a, k, v, &LAYOUT, layer, slots)
    };
    assert_refused(
        run(&k, &k, 0, &[0, 20]),
        KernelError::SlotOutOfRange {
            token: 1,
            slot: 20,
            num_slots: 20,
        },
    );
    assert_refused(
        run(&k, &k, 0, &[-2, 0]),
        KernelError::SlotOutOfRange {
            token: 0,
            slot: -2,
            num_slots: 20,
        },
    );
    assert_refused(
        run(&k, &k, 0, &[0]),
        KernelError::SlotMappingLength {
            expected: 2,
            got: 1,
        },
    );
    assert_refused(
        run(&k, &k, 3, &[0, 1]),
        KernelError::LayerOutOfRange {
            op,
            layer: 3,
            num_layers: 3,
        },
    );
    let bf = k.to_dtype(DType::BF16).unwrap();
    let e = KernelError::DtypeMismatch {
        op,
        what: "k",
        expected: DType::F32,
        got: DType::BF16,
    };
    assert_refused(run(&bf, &k, 0, &[0, 1]), e);
    let short = k.narrow(2, 0, 4).unwrap();
    let e = KernelError::ShapeMismatch {
        op,
        what: "v",
        expected: "[2, 2, 8]".into(),
        got: vec![2, 2, 4],
    };
    assert_refused(run(&k, &short, 0, &[0, 1]), e);
    assert!(a.to_f32_vec().iter().all(|&x| x == SENTINEL));

    let flat = HostArena::zeros(100, DType::F32).unwrap();
    let e = KernelError::ShapeMismatch {
        op,
        what: "arena",
        expected: format!(
            "{:?} ({} elements)",
            LAYOUT.shape(),
            LAYOUT.shape().iter().product::<usize>()
        ),
        got: vec![100],
    };
    assert_refused(reshape_and_cache(&flat, &k, &k, &LAYOUT, 0, &[0, 1]), e);
}
