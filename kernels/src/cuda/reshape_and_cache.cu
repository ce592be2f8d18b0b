// Writes one layer's new K and V rows into their slots of the block-major KV
// arena [num_blocks][num_layers][2][block_size][num_kv_heads][head_dim]
// (the layout KvCacheLayout describes on the host).
//
// Token t goes to slot s = slot_mapping[t] = block * block_size + offset;
// s == -1 skips the token (its K/V is already cached). A token's heads are
// adjacent both in k/v (heads contiguous inside a token row) and in the arena
// (one slot holds num_kv_heads * head_dim elements), so each token is two
// contiguous copies of `row` = num_kv_heads * head_dim elements.
//
// Grid: one block per token (gridDim.x == num_tokens). Slots must be unique
// within a call (the scheduler gives each new token its own slot); two
// tokens with one slot would race.

namespace tandem {

template <typename T>
__device__ __forceinline__ void copy_row(T* __restrict__ dst, const T* __restrict__ src, u32 row) {
    constexpr u32 N = Vec16<T>::N;
    if (row % N == 0 && aligned16(dst) && aligned16(src)) {
        const uint4* s = reinterpret_cast<const uint4*>(src);
        uint4* d = reinterpret_cast<uint4*>(dst);
        for (u32 i = threadIdx.x; i < row / N; i += blockDim.x) d[i] = s[i];
    } else {
        for (u32 i = threadIdx.x; i < row; i += blockDim.x) dst[i] = src[i];
    }
}

template <typename T>
__device__ void reshape_and_cache(T* arena, const T* k, const T* v,
                                  const i64* __restrict__ slot_mapping, u32 num_tokens,
                                  u64 k_token_stride, u64 v_token_stride, u32 num_blocks,
                                  u32 num_layers, u32 layer, u32 block_size, u32 row) {
    const u32 t = blockIdx.x;
    if (t >= num_tokens || layer >= num_layers) return;
    const i64 slot = slot_mapping[t];
    // -1 means "skip"; anything else outside the arena is a metadata bug the
    // host already refuses, and is skipped here rather than written.
    if (slot < 0 || slot >= i64(num_blocks) * i64(block_size)) return;
    const u64 block = u64(slot) / block_size;
    const u64 offset = u64(slot) % block_size;
    const u64 half_elems = u64(block_size) * row;  // one layer's K (or V)
    const u64 block_elems = u64(num_layers) * 2 * half_elems;
    T* k_dst = arena + block * block_elems + u64(layer) * 2 * half_elems + offset * row;
    T* v_dst = k_dst + half_elems;
    copy_row(k_dst, k + u64(t) * k_token_stride, row);
    copy_row(v_dst, v + u64(t) * v_token_stride, row);
}

}  // namespace tandem

#define TANDEM_RESHAPE_AND_CACHE(SUFFIX, T)                                                   \
    extern "C" __global__ void __launch_bounds__(1024) reshape_and_cache_##SUFFIX(            \
        T* arena, const T* k, const T* v, const i64* slot_mapping, u32 num_tokens,            \
        u64 k_token_stride, u64 v_token_stride, u32 num_blocks, u32 num_layers, u32 layer,    \
        u32 block_size, u32 row) {                                                            \
        tandem::reshape_and_cache<T>(arena, k, v, slot_mapping, num_tokens, k_token_stride,   \
                                     v_token_stride, num_blocks, num_layers, layer,           \
                                     block_size, row);                                        \
    }
TANDEM_FOR_EACH_DTYPE(TANDEM_RESHAPE_AND_CACHE)
