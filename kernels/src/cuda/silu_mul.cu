// SwiGLU activation: out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]
// for i < inter, where gate_up is the fused gate/up projection
// [num_tokens, 2 * inter] (gate first, as the engine's Mlp fuses them) and
// silu(g) = g / (1 + exp(-g)). f32 maths, one rounding of the product.
//
// Grid: one block per token (gridDim.x == num_tokens); threads stride over
// the row in 16-byte words when the rows are aligned.

namespace tandem {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

template <typename T>
__device__ void silu_mul(T* __restrict__ out, const T* __restrict__ gate_up, u32 num_tokens,
                         u32 inter) {
    const u32 t = blockIdx.x;
    if (t >= num_tokens) return;
    const T* gate = gate_up + u64(t) * 2 * inter;
    const T* up = gate + inter;
    T* o = out + u64(t) * inter;
    constexpr u32 N = Vec16<T>::N;
    if (inter % N == 0 && aligned16(gate) && aligned16(o)) {
        // inter % N == 0 also aligns `up`, inter elements after `gate`.
        for (u32 i = threadIdx.x; i < inter / N; i += blockDim.x) {
            float g[N], u[N];
            load_f32<T, N>(gate + i * N, g);
            load_f32<T, N>(up + i * N, u);
#pragma unroll
            for (u32 j = 0; j < N; ++j) g[j] = silu(g[j]) * u[j];
            store16<T>(o + i * N, g);
        }
    } else {
        for (u32 i = threadIdx.x; i < inter; i += blockDim.x) {
            o[i] = from_f32<T>(silu(to_f32(gate[i])) * to_f32(up[i]));
        }
    }
}

}  // namespace tandem

#define TANDEM_SILU_MUL(SUFFIX, T)                                                         \
    extern "C" __global__ void __launch_bounds__(1024)                                     \
        silu_mul_##SUFFIX(T* out, const T* gate_up, u32 num_tokens, u32 inter) {           \
        tandem::silu_mul<T>(out, gate_up, num_tokens, inter);                              \
    }
TANDEM_FOR_EACH_DTYPE(TANDEM_SILU_MUL)
