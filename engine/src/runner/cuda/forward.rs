//! One step on the GPU: embedding, then per layer RMSNorm → fused qkv GEMM
//! (+ bias) → q/k norm → rotary → reshape-and-cache → paged attention → o
//! GEMM → fused residual-add RMSNorm → gate/up GEMM → SiLU-mul → down GEMM,
//! then the final norm, the rows that need logits gathered, and the LM head
//! written as f32. Every launch goes on one stream; the only wait is the
//! copy of the logits back to the host.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView};
use tandem_kernels::cuda::{
    AttentionConfig, CudaKernelError, CudaKernels, GemmShape, HeadRows, QStrides, RotaryLayout,
};

use super::weights::{DeviceLinear, Upload};
use super::{GpuModel, RunnerElement};
use crate::batch::ForwardBatch;
use crate::config::ModelConfig;

/// The model's sizes as the step uses them.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
}

impl Dims {
    fn of(c: &ModelConfig) -> Self {
        Dims {
            hidden: c.hidden_size,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
        }
    }

    fn q(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Elements per token of the fused qkv activation.
    fn qkv(&self) -> usize {
        self.q() + 2 * self.kv()
    }
}

/// Activation buffers sized for the largest step; a larger step (possible
/// only for prompt-logprob or parity batches) grows them.
pub(super) struct Activations<T> {
    tokens: usize,
    logit_rows: usize,
    residual: CudaSlice<T>,
    normed: CudaSlice<T>,
    qkv: CudaSlice<T>,
    attn: CudaSlice<T>,
    /// Output of the o and down projections (the residual branch).
    branch: CudaSlice<T>,
    gate_up: CudaSlice<T>,
    act: CudaSlice<T>,
    /// Token ids of zeros: gathering a bias "row 0" into every token row.
    zeros: CudaSlice<u32>,
    /// The final hidden rows that get logits, and their logits.
    last: CudaSlice<T>,
    logits: CudaSlice<f32>,
}

fn alloc<T: RunnerElement>(
    stream: &Arc<CudaStream>,
    len: usize,
    what: &str,
) -> Upload<CudaSlice<T>> {
    stream
        .alloc_zeros::<T>(len.max(1))
        .map_err(|e| format!("allocating the {what} buffer ({len} elements): {e}"))
}

impl<T: RunnerElement> Activations<T> {
    pub fn new(
        stream: &Arc<CudaStream>,
        config: &ModelConfig,
        tokens: usize,
        logit_rows: usize,
    ) -> Upload<Self> {
        let d = Dims::of(config);
        let (n, m) = (tokens.max(1), logit_rows.max(1));
        Ok(Activations {
            tokens: n,
            logit_rows: m,
            residual: alloc(stream, n * d.hidden, "residual")?,
            normed: alloc(stream, n * d.hidden, "normed")?,
            qkv: alloc(stream, n * d.qkv(), "qkv")?,
            attn: alloc(stream, n * d.q(), "attention output")?,
            branch: alloc(stream, n * d.hidden, "projection output")?,
            gate_up: alloc(stream, n * 2 * d.intermediate, "gate/up")?,
            act: alloc(stream, n * d.intermediate, "SiLU-mul")?,
            zeros: stream
                .alloc_zeros::<u32>(n)
                .map_err(|e| format!("allocating the bias ids: {e}"))?,
            last: alloc(stream, m * d.hidden, "final hidden rows")?,
            logits: stream
                .alloc_zeros::<f32>(m * d.vocab)
                .map_err(|e| format!("allocating the logits ({m} x {}): {e}", d.vocab))?,
        })
    }
}

impl<T: RunnerElement> Activations<T> {
    /// `residual += branch`, then `normed = rms_norm(residual) * weight`:
    /// the residual add that closes one sub-block and the norm that opens
    /// the next, in one pass.
    fn add_branch_and_norm(
        &mut self,
        k: &CudaKernels,
        weight: &CudaSlice<T>,
        n: usize,
        hidden: usize,
        eps: f32,
    ) -> Result<(), CudaKernelError> {
        k.fused_add_rms_norm(
            &mut self.normed.as_view_mut(),
            &mut self.residual.as_view_mut(),
            &self.branch.as_view(),
            &weight.as_view(),
            n,
            hidden,
            eps,
        )
    }
}

fn kernel_error(e: CudaKernelError) -> String {
    e.to_string()
}

impl<T: RunnerElement> GpuModel<T> {
    pub(super) fn forward(&mut self, batch: &ForwardBatch) -> Upload<Vec<f32>> {
        let s = &self.shared;
        // The engine thread is not the one that created the context, and
        // cuBLAS uses whichever context is current on the calling thread.
        s.stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("making the GPU's context current: {e}"))?;
        let d = Dims::of(&s.config);
        let n = batch.token_ids.len();
        let m = batch.logits_indices.len();
        if let Some(&bad) = batch.token_ids.iter().find(|&&t| t as usize >= d.vocab) {
            return Err(format!(
                "token id {bad} is outside the vocabulary of {}",
                d.vocab
            ));
        }
        if n > self.acts.tokens || m > self.acts.logit_rows {
            self.acts = Activations::new(
                &s.stream,
                &s.config,
                n.max(self.acts.tokens),
                m.max(self.acts.logit_rows),
            )?;
        }
        let upload = |data: &[u32], what: &str| {
            s.stream
                .clone_htod(data)
                .map_err(|e| format!("uploading {what}: {e}"))
        };
        let ids = upload(&batch.token_ids, "token ids")?;
        let rows = upload(&batch.logits_indices, "logits rows")?;
        let tables = s.rotary.tables(&batch.positions);
        let to_t = |v: &[f32]| -> Vec<T> { v.iter().map(|&x| T::from_f64(x as f64)).collect() };
        let cos = s
            .stream
            .clone_htod(&to_t(&tables.cos))
            .map_err(|e| format!("uploading rotary cos: {e}"))?;
        let sin = s
            .stream
            .clone_htod(&to_t(&tables.sin))
            .map_err(|e| format!("uploading rotary sin: {e}"))?;
        let meta = s
            .kernels
            .upload_attention_metadata(
                &batch.attn,
                n,
                &s.layout,
                AttentionConfig {
                    num_heads: d.heads,
                    sliding_window: s.config.sliding_window,
                },
            )
            .map_err(kernel_error)?;
        let k = &s.kernels;
        let a = &mut self.acts;
        let w = &self.weights;
        let eps = s.config.rms_norm_eps as f32;
        let scale = 1.0 / (d.head_dim as f32).sqrt();

        k.embedding(
            &mut a.residual.as_view_mut(),
            &w.embed.as_view(),
            &ids.as_view(),
            n,
            d.hidden,
        )
        .map_err(kernel_error)?;
        for (i, layer) in w.layers.iter().enumerate() {
            if i == 0 {
                k.rms_norm(
                    &mut a.normed.as_view_mut(),
                    &a.residual.as_view(),
                    &layer.input_norm.as_view(),
                    n,
                    d.hidden,
                    eps,
                )
            } else {
                a.add_branch_and_norm(k, &layer.input_norm, n, d.hidden, eps)
            }
            .map_err(kernel_error)?;
            linear(s, &mut a.qkv, &a.normed.as_view(), &layer.qkv, &a.zeros, n)?;
            if let Some(norm) = &layer.qk_norm {
                for (weight, num_heads, offset) in
                    [(&norm.q, d.heads, 0), (&norm.k, d.kv_heads, d.q())]
                {
                    let heads = HeadRows {
                        num_tokens: n,
                        num_heads,
                        head_dim: d.head_dim,
                        token_stride: d.qkv(),
                        offset,
                    };
                    k.head_rms_norm(&mut a.qkv.as_view_mut(), &weight.as_view(), &heads, eps)
                        .map_err(kernel_error)?;
                }
            }
            k.rotary_neox(
                &mut a.qkv.as_view_mut(),
                &cos.as_view(),
                &sin.as_view(),
                &RotaryLayout {
                    num_tokens: n,
                    num_q_heads: d.heads,
                    num_kv_heads: d.kv_heads,
                    head_dim: d.head_dim,
                    rot_dim: d.head_dim,
                    token_stride: d.qkv(),
                    q_offset: 0,
                    k_offset: d.q(),
                },
            )
            .map_err(kernel_error)?;
            k.reshape_and_cache(
                &mut self.arena.as_view_mut(),
                &a.qkv.slice(d.q()..),
                d.qkv(),
                &a.qkv.slice(d.q() + d.kv()..),
                d.qkv(),
                i,
                &meta,
            )
            .map_err(kernel_error)?;
            k.paged_attention(
                &mut a.attn.as_view_mut(),
                &a.qkv.as_view(),
                QStrides {
                    token_stride: d.qkv(),
                    head_stride: d.head_dim,
                },
                &self.arena.as_view(),
                i,
                scale,
                &meta,
            )
            .map_err(kernel_error)?;
            linear(
                s,
                &mut a.branch,
                &a.attn.as_view(),
                &layer.o_proj,
                &a.zeros,
                n,
            )?;
            a.add_branch_and_norm(k, &layer.post_attn_norm, n, d.hidden, eps)
                .map_err(kernel_error)?;
            linear(
                s,
                &mut a.gate_up,
                &a.normed.as_view(),
                &layer.gate_up,
                &a.zeros,
                n,
            )?;
            k.silu_mul(
                &mut a.act.as_view_mut(),
                &a.gate_up.as_view(),
                n,
                d.intermediate,
            )
            .map_err(kernel_error)?;
            linear(s, &mut a.branch, &a.act.as_view(), &layer.down, &a.zeros, n)?;
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        a.add_branch_and_norm(k, &w.norm, n, d.hidden, eps)
            .map_err(kernel_error)?;
        // The rows that get logits, gathered like embeddings from the
        // normalised hidden states (a table of n rows).
        k.embedding(
            &mut a.last.as_view_mut(),
            &a.normed.slice(..n * d.hidden),
            &rows.as_view(),
            m,
            d.hidden,
        )
        .map_err(kernel_error)?;
        let head = w.lm_head.as_ref().unwrap_or(&w.embed);
        s.blas
            .linear(
                &mut a.logits.as_view_mut(),
                &a.last.as_view(),
                &head.as_view(),
                GemmShape {
                    rows: m,
                    in_dim: d.hidden,
                    out_dim: d.vocab,
                },
                false,
            )
            .map_err(kernel_error)?;
        let logits = s
            .stream
            .clone_dtoh(&a.logits.slice(..m * d.vocab))
            .map_err(|e| format!("copying the logits back: {e}"))?;
        s.stream
            .synchronize()
            .map_err(|e| format!("finishing the step: {e}"))?;
        Ok(logits)
    }
}

/// `y = x · wᵀ (+ b)` for `n` rows; a bias is first gathered into every
/// row of `y` (row 0 of the `[1, out]` bias table), then the GEMM adds the
/// product to it, so the sum is rounded once as on the CPU.
fn linear<T: RunnerElement>(
    s: &super::Shared,
    y: &mut CudaSlice<T>,
    x: &CudaView<'_, T>,
    l: &DeviceLinear<T>,
    zeros: &CudaSlice<u32>,
    n: usize,
) -> Upload<()> {
    if let Some(bias) = &l.bias {
        s.kernels
            .embedding(
                &mut y.as_view_mut(),
                &bias.as_view(),
                &zeros.as_view(),
                n,
                l.out_dim,
            )
            .map_err(kernel_error)?;
    }
    s.blas
        .linear(
            &mut y.as_view_mut(),
            x,
            &l.weight.as_view(),
            GemmShape {
                rows: n,
                in_dim: l.in_dim,
                out_dim: l.out_dim,
            },
            l.bias.is_some(),
        )
        .map_err(kernel_error)
}
