// RMSNorm over the last dimension, optionally fused with the residual add
// that precedes it in a decoder block.
//
//   rms_norm:           out = x / sqrt(mean(x^2) + eps) * weight
//   fused_add_rms_norm: residual = residual + x   (stored, rounded to T)
//                       out = rms_norm(residual)
//
// Statistics and products are f32 and `out` is rounded once, as candle's
// CPU rms_norm does. The fused form normalises the *rounded* sum, which is
// what the unfused CPU path (`x1 = residual + h`, then norm) computes.
//
// Grid: one block per row (gridDim.x == num_rows); blockDim.x a multiple of
// 32, at most 1024. Two passes over the row: sum of squares, then scale;
// the second pass reads what the first wrote (same thread, same indices).
//
//   head_rms_norm:      the same norm, in place, over each head row of q or k
//                       inside the fused qkv activation (Qwen3's q_norm and
//                       k_norm): row h of token t starts at
//                       x + t * token_stride + offset + h * head_dim.
//                       One block per token, one warp per head row.

namespace tandem {

template <typename T, bool ADD>
__device__ void rms_norm(T* __restrict__ out, T* residual, const T* x,
                         const T* __restrict__ weight, u32 num_rows, u32 hidden, float eps) {
    __shared__ float scratch[32];
    const u32 row = blockIdx.x;
    if (row >= num_rows) return;
    const u64 base = u64(row) * hidden;
    const T* xr = x + base;
    T* rr = ADD ? residual + base : nullptr;
    T* outr = out + base;
    // With ADD the normalised values are the updated residual row.
    const T* src = ADD ? static_cast<const T*>(rr) : xr;

    constexpr u32 N = Vec16<T>::N;
    const bool vec = hidden % N == 0 && aligned16(xr) && aligned16(outr) &&
                     aligned16(weight) && (!ADD || aligned16(rr));

    float sum_sq = 0.0f;
    if (vec) {
        for (u32 i = threadIdx.x; i < hidden / N; i += blockDim.x) {
            float a[N];
            load_f32<T, N>(xr + i * N, a);
            if constexpr (ADD) {
                float r[N];
                load_f32<T, N>(rr + i * N, r);
#pragma unroll
                for (u32 j = 0; j < N; ++j) a[j] = to_f32(from_f32<T>(a[j] + r[j]));
                store16<T>(rr + i * N, a);
            }
#pragma unroll
            for (u32 j = 0; j < N; ++j) sum_sq += a[j] * a[j];
        }
    } else {
        for (u32 c = threadIdx.x; c < hidden; c += blockDim.x) {
            float a = to_f32(xr[c]);
            if constexpr (ADD) {
                const T s = from_f32<T>(a + to_f32(rr[c]));
                rr[c] = s;
                a = to_f32(s);
            }
            sum_sq += a * a;
        }
    }
    const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / float(hidden) + eps);

    if (vec) {
        for (u32 i = threadIdx.x; i < hidden / N; i += blockDim.x) {
            float a[N], w[N];
            load_f32<T, N>(src + i * N, a);
            load_f32<T, N>(weight + i * N, w);
#pragma unroll
            for (u32 j = 0; j < N; ++j) a[j] = a[j] * inv_rms * w[j];
            store16<T>(outr + i * N, a);
        }
    } else {
        for (u32 c = threadIdx.x; c < hidden; c += blockDim.x) {
            outr[c] = from_f32<T>(to_f32(src[c]) * inv_rms * to_f32(weight[c]));
        }
    }
}

template <typename T>
__device__ void head_rms_norm(T* x, const T* __restrict__ weight, u32 num_tokens, u32 num_heads,
                              u32 head_dim, u64 token_stride, u64 offset, float eps) {
    const u32 t = blockIdx.x;
    if (t >= num_tokens) return;
    const u32 lane = threadIdx.x & 31;
    const u32 warps = blockDim.x >> 5;
    for (u32 h = threadIdx.x >> 5; h < num_heads; h += warps) {
        T* row = x + u64(t) * token_stride + offset + u64(h) * head_dim;
        float sum_sq = 0.0f;
        for (u32 c = lane; c < head_dim; c += 32) {
            const float a = to_f32(row[c]);
            sum_sq += a * a;
        }
        // Every lane reads its own elements before the shuffle and writes
        // only them after it: in place is safe.
        const float inv_rms = rsqrtf(warp_sum(sum_sq) / float(head_dim) + eps);
        for (u32 c = lane; c < head_dim; c += 32) {
            row[c] = from_f32<T>(to_f32(row[c]) * inv_rms * to_f32(weight[c]));
        }
    }
}

}  // namespace tandem

#define TANDEM_RMS_NORM(SUFFIX, T)                                                        \
    extern "C" __global__ void __launch_bounds__(1024)                                    \
        rms_norm_##SUFFIX(T* out, const T* x, const T* weight, u32 num_rows, u32 hidden,  \
                          float eps) {                                                    \
        tandem::rms_norm<T, false>(out, nullptr, x, weight, num_rows, hidden, eps);       \
    }                                                                                     \
    extern "C" __global__ void __launch_bounds__(1024)                                    \
        fused_add_rms_norm_##SUFFIX(T* out, T* residual, const T* x, const T* weight,     \
                                    u32 num_rows, u32 hidden, float eps) {                \
        tandem::rms_norm<T, true>(out, residual, x, weight, num_rows, hidden, eps);       \
    }                                                                                     \
    extern "C" __global__ void __launch_bounds__(1024)                                    \
        head_rms_norm_##SUFFIX(T* x, const T* weight, u32 num_tokens, u32 num_heads,      \
                               u32 head_dim, u64 token_stride, u64 offset, float eps) {   \
        tandem::head_rms_norm<T>(x, weight, num_tokens, num_heads, head_dim, token_stride, \
                                 offset, eps);                                            \
    }
TANDEM_FOR_EACH_DTYPE(TANDEM_RMS_NORM)
