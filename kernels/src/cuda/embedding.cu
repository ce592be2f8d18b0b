// Embedding gather: out[t, :] = table[ids[t], :].
//
// Grid: one block per token (gridDim.x == num_tokens); any multiple of 32
// threads loops over the row. Rows are copied as 16-byte words when both
// rows are 16-byte aligned, element by element otherwise.

namespace tandem {

template <typename T>
__device__ void embedding(T* __restrict__ out, const T* __restrict__ table,
                          const u32* __restrict__ ids, u32 num_tokens, u32 vocab,
                          u32 hidden) {
    const u32 t = blockIdx.x;
    if (t >= num_tokens) return;
    T* dst = out + u64(t) * hidden;
    const u32 id = ids[t];
    // The runner checks token ids against the vocabulary before upload; an
    // id that is out of range anyway gives a NaN row, never a read outside
    // the table.
    if (id >= vocab) {
        const T nan = from_f32<T>(quiet_nan());
        for (u32 c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = nan;
        return;
    }
    const T* src = table + u64(id) * hidden;
    constexpr u32 N = Vec16<T>::N;
    if (hidden % N == 0 && aligned16(src) && aligned16(dst)) {
        const uint4* s = reinterpret_cast<const uint4*>(src);
        uint4* d = reinterpret_cast<uint4*>(dst);
        for (u32 i = threadIdx.x; i < hidden / N; i += blockDim.x) d[i] = s[i];
    } else {
        for (u32 c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = src[c];
    }
}

}  // namespace tandem

#define TANDEM_EMBEDDING(SUFFIX, T)                                                  \
    extern "C" __global__ void __launch_bounds__(1024)                               \
        embedding_##SUFFIX(T* out, const T* table, const u32* ids, u32 num_tokens,   \
                           u32 vocab, u32 hidden) {                                  \
        tandem::embedding<T>(out, table, ids, num_tokens, vocab, hidden);            \
    }
TANDEM_FOR_EACH_DTYPE(TANDEM_EMBEDDING)
