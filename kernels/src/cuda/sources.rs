//! The CUDA C sources, embedded in the binary and compiled at run time with
//! NVRTC (see `nvrtc.rs`), so building tandem needs no `nvcc`.

/// Text NVRTC sees in front of every source: shared types and helpers.
const PRELUDE: &str = include_str!("prelude.cuh");

/// Element types every kernel is instantiated for, as entry-point suffixes.
pub const DTYPE_SUFFIXES: [&str; 3] = ["f32", "bf16", "f16"];

/// Largest head dims of the paged-attention instantiations
/// (`paged_attention_<dtype>_hd<N>`); see `paged_attention.cu`.
pub const ATTENTION_HEAD_DIMS: [usize; 4] = [32, 64, 128, 256];

/// One `.cu` file and the operations it defines.
#[derive(Debug)]
pub struct KernelSource {
    /// File name, used in compiler messages (`rms_norm.cu(12): error ...`).
    pub name: &'static str,
    code: &'static str,
    /// Operation names; entry points are `<op>_<dtype>` (attention adds `_hd<N>`).
    ops: &'static [&'static str],
    per_head_dim: bool,
}

impl KernelSource {
    /// The program NVRTC compiles: the prelude, then the file, with line
    /// numbers in messages counted from the file's own first line.
    pub fn program(&self) -> String {
        format!("{PRELUDE}\n#line 1 \"{}\"\n{}", self.name, self.code)
    }

    /// Every `extern "C"` kernel the file defines.
    pub fn entry_points(&self) -> Vec<String> {
        let mut names = Vec::new();
        for op in self.ops {
            for dtype in DTYPE_SUFFIXES {
                if self.per_head_dim {
                    for hd in ATTENTION_HEAD_DIMS {
                        names.push(format!("{op}_{dtype}_hd{hd}"));
                    }
                } else {
                    names.push(format!("{op}_{dtype}"));
                }
            }
        }
        names
    }
}

/// Every kernel source, in the order they are compiled and loaded.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "embedding.cu",
        code: include_str!("embedding.cu"),
        ops: &["embedding"],
        per_head_dim: false,
    },
    KernelSource {
        name: "rms_norm.cu",
        code: include_str!("rms_norm.cu"),
        ops: &["rms_norm", "fused_add_rms_norm", "head_rms_norm"],
        per_head_dim: false,
    },
    KernelSource {
        name: "rotary.cu",
        code: include_str!("rotary.cu"),
        ops: &["rotary_neox"],
        per_head_dim: false,
    },
    KernelSource {
        name: "silu_mul.cu",
        code: include_str!("silu_mul.cu"),
        ops: &["silu_mul"],
        per_head_dim: false,
    },
    KernelSource {
        name: "reshape_and_cache.cu",
        code: include_str!("reshape_and_cache.cu"),
        ops: &["reshape_and_cache"],
        per_head_dim: false,
    },
    KernelSource {
        name: "paged_attention.cu",
        code: include_str!("paged_attention.cu"),
        ops: &["paged_attention", "paged_attention_combine"],
        per_head_dim: true,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_is_defined_by_its_source() {
        for s in SOURCES {
            for op in s.ops {
                assert!(
                    s.code.contains(&format!("{op}_##SUFFIX")),
                    "{op} in {}",
                    s.name
                );
            }
            assert!(s.program().contains(&format!("#line 1 \"{}\"", s.name)));
        }
        let all: Vec<String> = SOURCES.iter().flat_map(|s| s.entry_points()).collect();
        assert!(all.contains(&"paged_attention_bf16_hd128".to_string()));
        assert!(all.contains(&"fused_add_rms_norm_f16".to_string()));
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
