//! Public entry point of the linear layer: checks shapes and dtypes on the
//! tensor metadata, then runs the CPU kernel as a candle custom op reading
//! `w` in place (a projection's weights are never copied or converted).

use crate::cpu::gemm::{self, Bias, Isa, Lanes, PackedPanels, Problem};
use crate::error::KernelError;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use std::sync::{Arc, OnceLock};

const OP: &str = "linear";

/// `y = x · wᵀ (+ bias)`, accumulated in f32.
///
/// `x` is `[m, k]` (or `[..., k]`: leading dims are flattened and kept in the
/// output), f32, bf16 or f16; a strided `x` is made contiguous first. `w` is
/// `[n, k]` (the Hugging Face layout) in any of those dtypes and must be
/// contiguous (a row `narrow` of a fused weight is fine). `bias` is `[n]` in
/// any of those dtypes. Returns `[m, n]` (resp. `[..., n]`) in `x`'s dtype.
/// CPU tensors only.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    linear_with(x, w, bias, Isa::detect(), None)
}

/// A projection's `[n, k]` weight, for a model that multiplies by it step
/// after step: [`LinearWeight::forward`] is [`linear`], except that where
/// the CPU's kernel build reads a packed copy of the weight faster than it
/// packs tiles per call, the copy is made ([`LinearWeight::pack_ahead`], or
/// else at the first product that reads it) and kept. Today that is bf16 weights on CPUs with AVX512-BF16 but no AMX
/// (read by bf16 products through `vdpbf16ps`) and f32 weights on CPUs
/// with AVX-512 (read by f32 products through the AVX-512 broadcast
/// kernel), from 9 activation rows: prefill and batched decode. The copy
/// is as large as the weight. The tensor itself stays as it is, for the
/// decode kernels that stream it. Clones share the tensor and the copy.
#[derive(Clone)]
pub struct LinearWeight {
    tensor: Tensor,
    packed: Arc<OnceLock<Option<PackedPanels>>>,
}

impl LinearWeight {
    /// Wraps `tensor`; nothing is packed yet.
    pub fn new(tensor: Tensor) -> Self {
        LinearWeight {
            tensor,
            packed: Arc::default(),
        }
    }

    /// Makes the packed copy now, where this CPU's build reads one for
    /// products in the weight's own dtype; a no-op otherwise and once made.
    /// A host runner calls it at load, so no request waits for the packing
    /// (on a VM whose fresh pages fault through the host, 1 GB took
    /// seconds); a model loaded only to be copied to a GPU never packs.
    pub fn pack_ahead(&self) {
        if let Ok((_, k)) = self.tensor.dims2() {
            let dtype = self.tensor.dtype();
            if PackedPanels::serve(Isa::detect(), dtype, dtype, usize::MAX, k) {
                self.packed.get_or_init(|| self.pack());
            }
        }
    }

    /// The packed copy of a contiguous `[n, k]` bf16 or f32 CPU tensor.
    fn pack(&self) -> Option<PackedPanels> {
        let (n, k) = self.tensor.dims2().ok()?;
        let (storage, layout) = self.tensor.storage_and_layout();
        let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return None;
        };
        match cpu {
            CpuStorage::BF16(v) => pack_slice(&v[start..end], n, k),
            CpuStorage::F32(v) => pack_slice(&v[start..end], n, k),
            _ => None,
        }
    }

    /// The `[n, k]` weight.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Bytes held by the packed copy (0 while none is made).
    pub fn packed_bytes(&self) -> usize {
        self.packed
            .get()
            .and_then(Option::as_ref)
            .map_or(0, PackedPanels::bytes)
    }

    /// `y = x · wᵀ (+ bias)`, as [`linear`].
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        linear_with(x, &self.tensor, bias, Isa::detect(), Some(&self.packed))
    }
}

/// [`linear`] forced onto one kernel build (one of [`Isa::available`]), so
/// tests and benches can compare the builds on one machine. Not for
/// production use.
#[doc(hidden)]
pub fn linear_on(
    isa: Isa,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    linear_with(x, w, bias, runnable(isa), None)
}

/// `isa`, after checking this CPU runs it.
fn runnable(isa: Isa) -> Isa {
    assert!(
        Isa::available().contains(&isa),
        "this CPU cannot run the {} kernels",
        isa.name()
    );
    isa
}

/// [`LinearWeight::forward`] on one kernel build, as [`linear_on`].
#[doc(hidden)]
pub fn linear_weight_on(
    isa: Isa,
    x: &Tensor,
    w: &LinearWeight,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    linear_with(x, &w.tensor, bias, runnable(isa), Some(&w.packed))
}

/// `w` (`[n, k]`) packed for the kernel that reads its dtype: bf16 pairs
/// or f32 panels.
fn pack_slice<W: Lanes>(w: &[W], n: usize, k: usize) -> Option<PackedPanels> {
    if let Some(w) = W::as_f32(w) {
        return PackedPanels::f32_of(w, n, k);
    }
    if W::DTYPE != DType::BF16 {
        return None;
    }
    // SAFETY: `W` is bf16 (its dtype says so), a plain 16-bit value: the
    // slice reinterprets as `u16` of the same length.
    let bits = unsafe { std::slice::from_raw_parts(w.as_ptr().cast(), w.len()) };
    PackedPanels::pairs_of(bits, n, k)
}

/// Where a weight's packed copy is kept, once made (`None` inside: the
/// CPU has no build that reads one).
type PackCache = OnceLock<Option<PackedPanels>>;

fn linear_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    isa: Isa,
    cache: Option<&PackCache>,
) -> candle_core::Result<Tensor> {
    for (what, t) in [("x", Some(x)), ("w", Some(w)), ("bias", bias)] {
        if let Some(t) = t {
            check_dtype(what, t.dtype())?;
        }
    }
    let (n, k) = match *w.dims() {
        [n, k] => (n, k),
        _ => return Err(shape_err("w", "[n, k]".into(), w.dims())),
    };
    let Some((&x_k, lead)) = x.dims().split_last() else {
        return Err(shape_err("x", format!("[m, {k}]"), x.dims()));
    };
    if x_k != k {
        return Err(shape_err("x", format!("[m, {k}] (k from w)"), x.dims()));
    }
    if let Some(b) = bias {
        if b.dims() != [n] {
            return Err(shape_err("bias", format!("[{n}] (n from w)"), b.dims()));
        }
    }
    if !w.is_contiguous() {
        return Err(KernelError::BadStrides {
            op: OP,
            what: "w",
            requirement: "contiguous (the kernel never copies weights)",
        }
        .into());
    }
    let mut out_dims = lead.to_vec();
    out_dims.push(n);
    let m = lead.iter().product();
    let op = LinearOp {
        isa,
        cache: cache.filter(|_| PackedPanels::serve(isa, x.dtype(), w.dtype(), m, k)),
        m,
        k,
        n,
        out_shape: Shape::from(out_dims),
    };
    let x = x.contiguous()?;
    match bias {
        None => x.apply_op2_no_bwd(w, &op),
        Some(b) => x.apply_op3_no_bwd(w, &b.contiguous()?, &op),
    }
}

fn check_dtype(what: &'static str, dtype: DType) -> Result<(), KernelError> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(()),
        _ => Err(KernelError::UnsupportedOperandDtype {
            op: OP,
            what,
            dtype,
        }),
    }
}

fn shape_err(what: &'static str, expected: String, got: &[usize]) -> candle_core::Error {
    KernelError::ShapeMismatch {
        op: OP,
        what,
        expected,
        got: got.to_vec(),
    }
    .into()
}

struct LinearOp<'a> {
    isa: Isa,
    /// Where `w`'s packed copy is (or goes), when this product reads one.
    cache: Option<&'a PackCache>,
    m: usize,
    k: usize,
    n: usize,
    out_shape: Shape,
}

impl LinearOp<'_> {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let bias = match bias {
            None => None,
            Some((s, l)) => {
                let r = contiguous_range("bias", l)?;
                Some(match s {
                    CpuStorage::F32(b) => Bias::F32(&b[r]),
                    CpuStorage::BF16(b) => Bias::BF16(&b[r]),
                    CpuStorage::F16(b) => Bias::F16(&b[r]),
                    other => return Err(dtype_err("bias", other.dtype())),
                })
            }
        };
        let out = match x.0 {
            CpuStorage::F32(s) => self.with_x(&s[contiguous_range("x", x.1)?], w, bias)?,
            CpuStorage::BF16(s) => self.with_x(&s[contiguous_range("x", x.1)?], w, bias)?,
            CpuStorage::F16(s) => self.with_x(&s[contiguous_range("x", x.1)?], w, bias)?,
            other => return Err(dtype_err("x", other.dtype())),
        };
        Ok((out, self.out_shape.clone()))
    }

    fn with_x<X: Lanes>(
        &self,
        x: &[X],
        (ws, wl): (&CpuStorage, &Layout),
        bias: Option<Bias<'_>>,
    ) -> candle_core::Result<CpuStorage> {
        let r = contiguous_range("w", wl)?;
        let out = match ws {
            CpuStorage::F32(w) => self.compute(x, &w[r], bias),
            CpuStorage::BF16(w) => self.compute(x, &w[r], bias),
            CpuStorage::F16(w) => self.compute(x, &w[r], bias),
            other => return Err(dtype_err("w", other.dtype())),
        };
        Ok(X::into_storage(out))
    }

    fn compute<X: Lanes, W: Lanes>(&self, x: &[X], w: &[W], bias: Option<Bias<'_>>) -> Vec<X> {
        let packed = self
            .cache
            .and_then(|c| c.get_or_init(|| pack_slice(w, self.n, self.k)).as_ref());
        let p = Problem {
            x,
            w,
            packed,
            bias,
            m: self.m,
            k: self.k,
            n: self.n,
        };
        gemm::linear(&p, self.isa)
    }
}

/// The storage range of a tensor `linear_with` made (or checked) contiguous.
fn contiguous_range(what: &'static str, l: &Layout) -> Result<std::ops::Range<usize>, KernelError> {
    l.contiguous_offsets()
        .map(|(start, end)| start..end)
        .ok_or(KernelError::BadStrides {
            op: OP,
            what,
            requirement: "contiguous",
        })
}

fn dtype_err(what: &'static str, dtype: DType) -> candle_core::Error {
    KernelError::UnsupportedOperandDtype {
        op: OP,
        what,
        dtype,
    }
    .into()
}

impl CustomOp2 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((x, xl), (w, wl), None)
    }
}

impl CustomOp3 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((x, xl), (w, wl), Some((b, bl)))
    }
}
