//! The per-row CUDA kernels against the CPU operations the engine runs
//! today (candle's index_select, rms_norm, rope_thd, silu), on random
//! inputs with ragged sizes (row lengths that are and are not multiples of
//! a 16-byte word), in f32, bf16 and f16. Skipped without a GPU.
#![cfg(feature = "cuda")]

mod common;

use candle_core::DType;
use candle_core::{Device, Tensor};
use common::gpu::{download, dtype, kernels, upload, upload_slice, Elem};
use common::{assert_close, random_values, tensor, to_f32_vec, tolerance};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_kernels::cuda::{Blas, CudaKernels, GemmShape, HeadRows, RotaryLayout};

/// Random values of `T`, as a CPU tensor of `shape`.
fn random<T: Elem>(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let xs: Vec<f32> = random_values(rng, n).iter().map(|x| x * scale).collect();
    tensor(&xs, shape, dtype::<T>())
}

/// The test `$name`: `$case::<T>` for f32, bf16 and f16 (skipped without
/// a GPU).
macro_rules! test_each_dtype {
    ($name:ident, $case:ident) => {
        #[test]
        fn $name() {
            let Some(k) = kernels() else { return };
            $case::<f32>(&k);
            $case::<bf16>(&k);
            $case::<f16>(&k);
        }
    };
}

fn embedding_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (vocab, hidden, n) in [(100, 64, 7), (37, 20, 5), (1000, 896, 33)] {
        let table = random::<T>(&mut rng, &[vocab, hidden], 1.0);
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
        let want = table
            .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0)
            .unwrap();
        let (t, i) = (upload::<T>(k, &table), upload_slice(k, &ids));
        let mut out = k.stream().alloc_zeros::<T>(n * hidden).unwrap();
        k.embedding(
            &mut out.as_view_mut(),
            &t.as_view(),
            &i.as_view(),
            n,
            hidden,
        )
        .unwrap();
        assert_eq!(
            download(k, &out, n * hidden),
            to_f32_vec(&want),
            "{:?}",
            T::DTYPE
        );
    }
}

test_each_dtype!(embedding_gathers_rows_exactly, embedding_case);

fn rms_norm_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let eps = 1e-6;
    for (rows, hidden) in [(5, 64), (3, 20), (17, 896), (2, 4096)] {
        let x = random::<T>(&mut rng, &[rows, hidden], 3.0);
        let w = random::<T>(&mut rng, &[hidden], 1.0);
        let res = random::<T>(&mut rng, &[rows, hidden], 3.0);
        let tol = tolerance(T::DTYPE);

        let want = candle_nn::ops::rms_norm(&x, &w, eps).unwrap();
        let (xd, wd) = (upload::<T>(k, &x), upload::<T>(k, &w));
        let mut out = k.stream().alloc_zeros::<T>(rows * hidden).unwrap();
        k.rms_norm(
            &mut out.as_view_mut(),
            &xd.as_view(),
            &wd.as_view(),
            rows,
            hidden,
            eps,
        )
        .unwrap();
        assert_close(&download(k, &out, rows * hidden), &to_f32_vec(&want), tol).unwrap();

        // The decoder's unfused order: residual + x rounded to T, then norm.
        let sum = (&res + &x).unwrap();
        let want = candle_nn::ops::rms_norm(&sum, &w, eps).unwrap();
        let mut rd = upload::<T>(k, &res);
        k.fused_add_rms_norm(
            &mut out.as_view_mut(),
            &mut rd.as_view_mut(),
            &xd.as_view(),
            &wd.as_view(),
            rows,
            hidden,
            eps,
        )
        .unwrap();
        assert_eq!(
            download(k, &rd, rows * hidden),
            to_f32_vec(&sum),
            "{:?}",
            T::DTYPE
        );
        assert_close(&download(k, &out, rows * hidden), &to_f32_vec(&want), tol).unwrap();
    }
}

test_each_dtype!(
    rms_norm_and_fused_residual_add_match_the_cpu_path,
    rms_norm_case
);

fn rotary_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // (tokens, q heads, kv heads, head dim): Qwen2.5-0.5B-like, Llama-like, odd.
    for (n, hq, hkv, d) in [(9, 14, 2, 64), (4, 32, 8, 128), (3, 3, 1, 20)] {
        let width = (hq + 2 * hkv) * d;
        let qkv = random::<T>(&mut rng, &[n, width], 2.0);
        let angles: Vec<f32> = (0..n * d / 2)
            .map(|i| (i / (d / 2)) as f32 * 10.0f32.powf(-((i % (d / 2)) as f32) / 8.0))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let (cos, sin) = (
            tensor(&cos, &[n, d / 2], T::DTYPE),
            tensor(&sin, &[n, d / 2], T::DTYPE),
        );
        let rope = |x: Tensor| {
            candle_nn::rotary_emb::rope_thd(
                &x.contiguous().unwrap().unsqueeze(0).unwrap(),
                &cos,
                &sin,
            )
            .unwrap()
            .squeeze(0)
            .unwrap()
        };
        let q = rope(
            qkv.narrow(1, 0, hq * d)
                .unwrap()
                .reshape((n, hq, d))
                .unwrap(),
        );
        let kk = rope(
            qkv.narrow(1, hq * d, hkv * d)
                .unwrap()
                .reshape((n, hkv, d))
                .unwrap(),
        );
        let v = qkv.narrow(1, (hq + hkv) * d, hkv * d).unwrap();
        let want = Tensor::cat(
            &[
                q.reshape((n, hq * d)).unwrap(),
                kk.reshape((n, hkv * d)).unwrap(),
                v,
            ],
            1,
        )
        .unwrap();

        let mut x = upload::<T>(k, &qkv);
        let (c, s) = (upload::<T>(k, &cos), upload::<T>(k, &sin));
        let layout = RotaryLayout {
            num_tokens: n,
            num_q_heads: hq,
            num_kv_heads: hkv,
            head_dim: d,
            rot_dim: d,
            token_stride: width,
            q_offset: 0,
            k_offset: hq * d,
        };
        k.rotary_neox(&mut x.as_view_mut(), &c.as_view(), &s.as_view(), &layout)
            .unwrap();
        // candle rounds after every bf16/f16 operation, the kernel once.
        let tol = 2.0 * tolerance(T::DTYPE);
        assert_close(&download(k, &x, n * width), &to_f32_vec(&want), tol).unwrap();
    }
}

test_each_dtype!(rotary_matches_candle_rope_on_q_and_k_in_place, rotary_case);

#[test]
fn rotary_refuses_overlapping_heads_and_odd_rot_dim() {
    let Some(k) = kernels() else { return };
    let mut x = k.stream().alloc_zeros::<f32>(1024).unwrap();
    let table = k.stream().alloc_zeros::<f32>(64).unwrap();
    let good = RotaryLayout {
        num_tokens: 2,
        num_q_heads: 2,
        num_kv_heads: 1,
        head_dim: 16,
        rot_dim: 16,
        token_stride: 64,
        q_offset: 0,
        k_offset: 32,
    };
    for bad in [
        RotaryLayout {
            k_offset: 16,
            ..good
        },
        RotaryLayout {
            rot_dim: 15,
            ..good
        },
        RotaryLayout {
            token_stride: 40,
            ..good
        },
    ] {
        assert!(k
            .rotary_neox(
                &mut x.as_view_mut(),
                &table.as_view(),
                &table.as_view(),
                &bad
            )
            .is_err());
    }
    k.rotary_neox(
        &mut x.as_view_mut(),
        &table.as_view(),
        &table.as_view(),
        &good,
    )
    .unwrap();
}

fn silu_mul_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (n, inter) in [(7, 64), (3, 20), (5, 4864)] {
        let gu = random::<T>(&mut rng, &[n, 2 * inter], 6.0);
        let gate = gu.narrow(1, 0, inter).unwrap();
        let up = gu.narrow(1, inter, inter).unwrap();
        let want = (candle_nn::ops::silu(&gate).unwrap() * up).unwrap();
        let gd = upload::<T>(k, &gu);
        let mut out = k.stream().alloc_zeros::<T>(n * inter).unwrap();
        k.silu_mul(&mut out.as_view_mut(), &gd.as_view(), n, inter)
            .unwrap();
        let tol = 2.0 * tolerance(T::DTYPE);
        assert_close(&download(k, &out, n * inter), &to_f32_vec(&want), tol).unwrap();
    }
}

test_each_dtype!(silu_mul_matches_the_cpu_mlp_activation, silu_mul_case);

fn head_rms_norm_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let eps = 1e-6;
    // (tokens, q heads, kv heads, head dim): Qwen3-like and odd.
    for (n, hq, hkv, d) in [(6, 16, 8, 128), (3, 3, 1, 20)] {
        let width = (hq + 2 * hkv) * d;
        let qkv = random::<T>(&mut rng, &[n, width], 3.0);
        let (wq, wk) = (
            random::<T>(&mut rng, &[d], 1.0),
            random::<T>(&mut rng, &[d], 1.0),
        );
        // The CPU path: narrow q and k out of qkv, norm each head row.
        let norm = |offset: usize, heads: usize, w: &Tensor| {
            let part = qkv.narrow(1, offset, heads * d).unwrap();
            let rows = part.contiguous().unwrap().reshape((n, heads, d)).unwrap();
            candle_nn::ops::rms_norm(&rows, w, eps)
                .unwrap()
                .reshape((n, heads * d))
                .unwrap()
        };
        let v = qkv.narrow(1, (hq + hkv) * d, hkv * d).unwrap();
        let want = Tensor::cat(&[norm(0, hq, &wq), norm(hq * d, hkv, &wk), v], 1).unwrap();
        let mut xd = upload::<T>(k, &qkv);
        for (w, heads, offset) in [(&wq, hq, 0), (&wk, hkv, hq * d)] {
            let rows = HeadRows {
                num_tokens: n,
                num_heads: heads,
                head_dim: d,
                token_stride: width,
                offset,
            };
            k.head_rms_norm(
                &mut xd.as_view_mut(),
                &upload::<T>(k, w).as_view(),
                &rows,
                eps,
            )
            .unwrap();
        }
        let tol = tolerance(T::DTYPE);
        assert_close(&download(k, &xd, n * width), &to_f32_vec(&want), tol).unwrap();
    }
}

test_each_dtype!(
    per_head_rms_norm_matches_qwen3_q_k_norm_in_place,
    head_rms_norm_case
);

fn gemm_case<T: Elem>(k: &CudaKernels) {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let blas = Blas::new(k.stream().clone()).unwrap();
    // (rows, in, out): one decode token, a prefill chunk, odd sizes.
    for (rows, in_dim, out_dim) in [(1, 896, 1152), (37, 64, 96), (5, 20, 7)] {
        let x = random::<T>(&mut rng, &[rows, in_dim], 1.0);
        let w = random::<T>(&mut rng, &[out_dim, in_dim], 0.1);
        let bias = random::<T>(&mut rng, &[out_dim], 1.0);
        let shape = GemmShape {
            rows,
            in_dim,
            out_dim,
        };
        let (xd, wd) = (upload::<T>(k, &x), upload::<T>(k, &w));
        // f32 output (the LM head): the exact product of the rounded inputs.
        let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let exact = f32_of(&x).matmul(&f32_of(&w).t().unwrap()).unwrap();
        let mut logits = k.stream().alloc_zeros::<f32>(rows * out_dim).unwrap();
        blas.linear(
            &mut logits.as_view_mut(),
            &xd.as_view(),
            &wd.as_view(),
            shape,
            false,
        )
        .unwrap();
        let got = k.stream().clone_dtoh(&logits).unwrap();
        assert_close(&got, &to_f32_vec(&exact), 1e-4).unwrap();
        // T output with the bias already in y: the CPU linear's one rounding.
        let want = tandem_kernels::linear(&x, &w, Some(&bias)).unwrap();
        let mut y = upload::<T>(k, &bias.unsqueeze(0).unwrap().repeat((rows, 1)).unwrap());
        blas.linear(
            &mut y.as_view_mut(),
            &xd.as_view(),
            &wd.as_view(),
            shape,
            true,
        )
        .unwrap();
        let tol = 2.0 * tolerance(T::DTYPE);
        assert_close(&download(k, &y, rows * out_dim), &to_f32_vec(&want), tol).unwrap();
    }
}

test_each_dtype!(cublas_linear_matches_the_cpu_linear, gemm_case);

#[test]
fn short_buffers_are_refused_before_launch() {
    let Some(k) = kernels() else { return };
    let small = k.stream().alloc_zeros::<f32>(10).unwrap();
    let mut out = k.stream().alloc_zeros::<f32>(10).unwrap();
    let e = k
        .rms_norm(
            &mut out.as_view_mut(),
            &small.as_view(),
            &small.as_view(),
            2,
            8,
            1e-6,
        )
        .unwrap_err();
    assert!(e.to_string().contains("needs at least 16"), "{e}");
}
