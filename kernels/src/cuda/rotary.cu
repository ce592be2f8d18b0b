// Rotary position embedding, "rotate half" (GPT-NeoX) form, in place on the
// query and key heads of one step, as the CPU path (candle's rope_thd) and
// transformers compute it. For each head row x and i < rot_dim / 2:
//
//   x[i]                = x[i] * cos[t, i] - x[i + rot_dim/2] * sin[t, i]
//   x[i + rot_dim/2]    = x[i] * sin[t, i] + x[i + rot_dim/2] * cos[t, i]
//
// Dimensions from rot_dim to head_dim are left as they are (partial
// rotary); the engine's models rotate the whole head (rot_dim == head_dim).
// cos/sin are the per-token tables the engine builds from the tokens' own
// positions (`Rotary::cos_sin`, llama3 or linear frequency scaling already
// applied), shaped [num_tokens, rot_dim / 2], in the activations' dtype.
//
// Head rows live in one buffer `x` (usually the fused qkv activation): the
// q head h of token t starts at x + t * token_stride + q_offset + h *
// head_dim, the k head h at x + t * token_stride + k_offset + h * head_dim.
// The host checks that q and k heads neither overlap each other nor spill
// into the next token, so each element pair is rotated by exactly one
// thread.
//
// Grid: one block per token (gridDim.x == num_tokens); threads stride over
// (head, i) pairs, so consecutive threads touch consecutive elements.

namespace tandem {

template <typename T>
__device__ void rotary_neox(T* x, const T* __restrict__ cos_table,
                            const T* __restrict__ sin_table, u32 num_tokens, u32 num_q_heads,
                            u32 num_kv_heads, u32 head_dim, u32 rot_dim, u64 token_stride,
                            u64 q_offset, u64 k_offset) {
    const u32 t = blockIdx.x;
    if (t >= num_tokens) return;
    const u32 half = rot_dim / 2;
    const T* c = cos_table + u64(t) * half;
    const T* s = sin_table + u64(t) * half;
    T* token = x + u64(t) * token_stride;
    const u32 pairs = (num_q_heads + num_kv_heads) * half;
    for (u32 p = threadIdx.x; p < pairs; p += blockDim.x) {
        const u32 head = p / half;
        const u32 i = p % half;
        T* row = head < num_q_heads ? token + q_offset + u64(head) * head_dim
                                    : token + k_offset + u64(head - num_q_heads) * head_dim;
        const float x1 = to_f32(row[i]);
        const float x2 = to_f32(row[i + half]);
        const float cc = to_f32(c[i]);
        const float ss = to_f32(s[i]);
        row[i] = from_f32<T>(x1 * cc - x2 * ss);
        row[i + half] = from_f32<T>(x1 * ss + x2 * cc);
    }
}

}  // namespace tandem

#define TANDEM_ROTARY(SUFFIX, T)                                                             \
    extern "C" __global__ void __launch_bounds__(1024) rotary_neox_##SUFFIX(                 \
        T* x, const T* cos_table, const T* sin_table, u32 num_tokens, u32 num_q_heads,       \
        u32 num_kv_heads, u32 head_dim, u32 rot_dim, u64 token_stride, u64 q_offset,         \
        u64 k_offset) {                                                                      \
        tandem::rotary_neox<T>(x, cos_table, sin_table, num_tokens, num_q_heads,             \
                               num_kv_heads, head_dim, rot_dim, token_stride, q_offset,      \
                               k_offset);                                                    \
    }
TANDEM_FOR_EACH_DTYPE(TANDEM_ROTARY)
