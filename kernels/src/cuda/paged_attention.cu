// Paged attention over one mixed varlen batch: prompt chunks (causal inside
// the chunk, attending to the sequence's earlier cached tokens) and single
// decode tokens side by side, reading K/V from the block-major arena
// [num_blocks][num_layers][2][block_size][num_kv_heads][head_dim] through
// each sequence's block table. Same semantics as the CPU kernel
// (kernels/src/cpu): the query token at absolute position `pos` sees cache
// positions 0..=pos, or pos-w+1..=pos with a sliding window w; GQA maps
// query head h to KV head h / group.
//
// Work decomposition (planned on the host, cuda/plan.rs): a *work item* is
// up to ROWS query vectors -- a few tokens of one sequence times some query
// heads of one KV head -- against a range [kv_lo, kv_hi) of KV positions.
// Every K/V row loaded serves all the item's query vectors (GQA heads and
// prompt tokens share each load). When a decode's context is long and the
// batch small, the host splits its KV range into partitions: each item then
// writes an unnormalised partial state (m, l, acc) and a second kernel,
// `paged_attention_combine`, merges the partitions (flash-decoding).
//
// One CUDA block (4 warps) runs one item with an online softmax, 32 keys per
// step:
//   1. the item's query vectors, times softmax_scale * log2(e), go to shared
//      memory as f32 (scores are then in log2 units and exp2 is used);
//   2. per step, the 32 keys' K and V rows are copied from the arena into
//      shared memory (16-byte coalesced loads when rows are 16-byte aligned);
//   3. each warp owns up to RPW query vectors (rows r = i * WARPS + warp);
//      lane j scores key j against them (full dot products from shared
//      memory), the warp rescales its running max / sum, stores the 32
//      probabilities per row, then each lane accumulates DV output dims of
//      P·V.
// CUDA cores only (no tensor cores yet): correct first; the host side
// documents what is not done.
//
// Index safety: the host validates the metadata (AttentionMetadata::validate)
// and builds the items; the kernel still bounds-checks every block-table
// entry before it becomes an arena address (a bad one reads zeros) and traps
// on an item larger than its tile or a launch with too little shared memory.

namespace tandem {
namespace attn {

constexpr u32 WARPS = 4;
constexpr u32 THREADS = WARPS * 32;
constexpr u32 CHUNK = 32;  // keys per step: one per lane
constexpr u32 NO_PARTIAL = 0xffffffffu;
// Blocks per multiprocessor the register budget is sized for (at most 128
// registers a thread, no spills): four blocks of 128 threads, which the
// shared memory of a head_dim-128 bf16 tile (37 KB) also allows on sm_80
// and sm_90.
constexpr u32 MIN_BLOCKS = 4;

// Mirrors `WorkItem` in cuda/plan.rs (ten u32 words).
struct WorkItem {
    u32 seq;         // block-table row
    u32 kv_head;
    u32 head_lo;     // first query head of the group covered (0..group)
    u32 num_heads;   // query heads covered
    u32 q_start;     // first q row (token index in the batch)
    u32 num_tokens;  // query tokens covered
    u32 first_pos;   // absolute position of token q_start
    u32 kv_lo;       // KV positions read: [kv_lo, kv_hi)
    u32 kv_hi;
    u32 partial;     // NO_PARTIAL: write `out`; else this item's partial slot
};
static_assert(sizeof(WorkItem) == 40, "WorkItem must match cuda/plan.rs");

// Mirrors `SplitTile` in cuda/plan.rs (eight u32 words): the query vectors
// of a partitioned tile and where its partial states are.
struct SplitTile {
    u32 kv_head;
    u32 head_lo;
    u32 num_heads;
    u32 q_start;
    u32 num_tokens;
    u32 first_partial;
    u32 num_partials;
    u32 reserved;
};
static_assert(sizeof(SplitTile) == 32, "SplitTile must match cuda/plan.rs");

// Mirrors `AttentionShape` in cuda/attention.rs; passed by value.
struct Shape {
    u64 q_token_stride;  // elements between tokens of q
    u64 q_head_stride;   // elements between heads of q
    u32 num_kv_heads;
    u32 group;           // query heads per KV head
    u32 head_dim;
    u32 block_size;
    u32 num_blocks;
    u32 num_layers;
    u32 layer;
    u32 max_blocks_per_seq;
    u32 sliding_window;  // 0: none
    u32 rows_per_item;   // the host's tile size, <= ROWS; also the partial-state stride
    float scale_log2;    // softmax_scale * log2(e)
    u32 reserved;
};
static_assert(sizeof(Shape) == 64, "Shape must match AttentionShape in cuda/attention.rs");

// Tile geometry for element type T and DV output dims per lane (head_dim <=
// 32 * DV). The host computes the same numbers (cuda/attention.rs).
template <typename T, u32 DV>
struct Geometry {
    static constexpr u32 N = 16 / sizeof(T);               // elements per 16 bytes
    static constexpr u32 RPW = 32 / DV < 8 ? 32 / DV : 8;  // query vectors per warp
    static constexpr u32 ROWS = WARPS * RPW;               // query vectors per item
    static constexpr u32 ALIGN = N > DV ? N : DV;
    // Row length of Q (f32) and V (T) in shared memory: head_dim rounded up
    // so 16-byte accesses and a lane's DV dims stay inside the row.
    __device__ static u32 padded(u32 d) { return (d + ALIGN - 1) / ALIGN * ALIGN; }
    // K rows get 16 more bytes, so the 8 lanes of one 16-byte shared-memory
    // phase (rows j..j+7, same column) fall in different banks.
    __device__ static u32 k_stride(u32 d) { return padded(d) + N; }
    __device__ static u32 smem_bytes(u32 d) {
        return ROWS * padded(d) * 4 + CHUNK * k_stride(d) * sizeof(T) +
               CHUNK * padded(d) * sizeof(T) + WARPS * RPW * CHUNK * 4;
    }
};

__device__ __forceinline__ u32 dynamic_smem_size() {
    u32 r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}

template <typename T, u32 DV>
__device__ void attend(T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ arena,
                       const u32* __restrict__ block_tables, const WorkItem* __restrict__ items,
                       float* __restrict__ part_acc, float2* __restrict__ part_ml, const Shape s) {
    using G = Geometry<T, DV>;
    extern __shared__ float4 smem[];  // float4: 16-byte aligned
    const u32 D = s.head_dim;
    if (D == 0 || D > 32 * DV || dynamic_smem_size() < G::smem_bytes(D)) __trap();
    const WorkItem it = items[blockIdx.x];
    const u32 nh = it.num_heads;
    const u32 R = it.num_tokens * nh;  // query vectors of this item
    if (s.rows_per_item > G::ROWS || nh == 0 || R == 0 || R > s.rows_per_item ||
        it.head_lo + nh > s.group) {
        __trap();
    }

    const u32 DP = G::padded(D);
    const u32 KS = G::k_stride(D);
    // Every region starts 16-byte aligned: DP and KS are multiples of N.
    float* Qs = reinterpret_cast<float*>(smem);  // [ROWS][DP] f32, pre-scaled
    T* Ks = reinterpret_cast<T*>(Qs + G::ROWS * DP);  // [CHUNK][KS]
    T* Vs = Ks + CHUNK * KS;                          // [CHUNK][DP]
    float* Ps = reinterpret_cast<float*>(Vs + CHUNK * DP);  // [WARPS][RPW][CHUNK]

    const u32 tid = threadIdx.x;
    const u32 lane = tid & 31;
    const u32 warp = tid >> 5;
    const u32 num_heads = s.num_kv_heads * s.group;
    const u32 head0 = it.kv_head * s.group + it.head_lo;

    // 1. Query vectors, row r = (token r / nh, head head0 + r % nh), for
    //    r < R (no other row is read); columns past D are zero.
    for (u32 idx = tid; idx < R * DP; idx += THREADS) {
        const u32 r = idx / DP;
        const u32 c = idx % DP;
        float x = 0.0f;
        if (c < D) {
            const u64 token = it.q_start + r / nh;
            const u64 head = head0 + r % nh;
            x = to_f32(q[token * s.q_token_stride + head * s.q_head_stride + c]) * s.scale_log2;
        }
        Qs[idx] = x;
    }
    // Padding columns D..DP of K and V stay zero: the loads below write only
    // columns < D, and the dot products run over DP columns.
    if (DP > D) {
        for (u32 idx = tid; idx < CHUNK * (DP - D); idx += THREADS) {
            const u32 j = idx / (DP - D);
            const u32 c = D + idx % (DP - D);
            Ks[j * KS + c] = from_f32<T>(0.0f);
            Vs[j * DP + c] = from_f32<T>(0.0f);
        }
    }

    float m[G::RPW], l[G::RPW], acc[G::RPW][DV];
#pragma unroll
    for (u32 i = 0; i < G::RPW; ++i) {
        m[i] = neg_inf();
        l[i] = 0.0f;
#pragma unroll
        for (u32 d = 0; d < DV; ++d) acc[i][d] = 0.0f;
    }

    const u32* table = block_tables + u64(it.seq) * s.max_blocks_per_seq;
    const u64 slot_stride = u64(s.num_kv_heads) * D;
    const u64 half_elems = u64(s.block_size) * slot_stride;  // one layer's K or V
    const u64 block_elems = u64(s.num_layers) * 2 * half_elems;
    const u64 head_base = u64(s.layer) * 2 * half_elems + u64(it.kv_head) * D;
    // Arena rows start at multiples of D elements from the arena's base.
    const bool vec = D % G::N == 0 && aligned16(arena);
    const u32 pieces = vec ? D / G::N : D;  // per row: 16-byte words or elements

    for (u32 c0 = it.kv_lo; c0 < it.kv_hi; c0 += CHUNK) {
        const u32 n = min(CHUNK, it.kv_hi - c0);  // keys in this step
        __syncthreads();  // the previous step's Ks, Vs and Ps are no longer read

        // 2. K and V rows of positions c0 .. c0 + n; rows n.. are zero.
        for (u32 idx = tid; idx < 2 * CHUNK * pieces; idx += THREADS) {
            const u32 kv = idx / (CHUNK * pieces);  // 0: K, 1: V
            const u32 j = idx % (CHUNK * pieces) / pieces;
            const u32 p = idx % pieces;
            const T* src = nullptr;
            if (j < n) {
                const u32 pos = c0 + j;
                const u32 logical = pos / s.block_size;
                // kv_hi <= context_len <= max_blocks_per_seq * block_size
                // (validated), so `logical` is inside the row; checked anyway.
                const u32 block = logical < s.max_blocks_per_seq ? table[logical] : s.num_blocks;
                if (block < s.num_blocks) {
                    src = arena + u64(block) * block_elems + head_base + kv * half_elems +
                          u64(pos % s.block_size) * slot_stride;
                }
            }
            T* dst = kv == 0 ? Ks + j * KS : Vs + j * DP;
            if (vec) {
                reinterpret_cast<uint4*>(dst)[p] =
                    src ? reinterpret_cast<const uint4*>(src)[p] : make_uint4(0, 0, 0, 0);
            } else {
                dst[p] = src ? src[p] : from_f32<T>(0.0f);
            }
        }
        __syncthreads();

        // 3a. Scores: lane j against key j, for each of the warp's rows.
        float sc[G::RPW];
#pragma unroll
        for (u32 i = 0; i < G::RPW; ++i) sc[i] = 0.0f;
        const T* krow = Ks + lane * KS;
        for (u32 c = 0; c < DP; c += G::N) {
            float kf[G::N];
            load_f32<T, G::N>(krow + c, kf);
#pragma unroll
            for (u32 i = 0; i < G::RPW; ++i) {
                const u32 r = i * WARPS + warp;
                if (r < R) {
                    const float4* qv = reinterpret_cast<const float4*>(Qs + r * DP + c);
#pragma unroll
                    for (u32 b = 0; b < G::N / 4; ++b) {
                        const float4 x = qv[b];
                        sc[i] += x.x * kf[4 * b] + x.y * kf[4 * b + 1] + x.z * kf[4 * b + 2] +
                                 x.w * kf[4 * b + 3];
                    }
                }
            }
        }

        // 3b. Online softmax per row (all branches below are warp-uniform:
        //     they depend on i, warp and warp reductions only).
#pragma unroll
        for (u32 i = 0; i < G::RPW; ++i) {
            const u32 r = i * WARPS + warp;
            if (r >= R) continue;
            float* prow = Ps + (warp * G::RPW + i) * CHUNK;
            const u32 pos = it.first_pos + r / nh;
            u32 lo = it.kv_lo;
            if (s.sliding_window != 0 && pos + 1 > s.sliding_window) {
                lo = max(lo, pos + 1 - s.sliding_window);
            }
            const u32 hi = min(it.kv_hi, pos + 1);
            const u32 key = c0 + lane;
            const bool visible = lane < n && key >= lo && key < hi;
            const float x = visible ? sc[i] : neg_inf();
            const float step_max = warp_max(x);
            if (step_max == neg_inf()) {  // this row sees none of these keys
                prow[lane] = 0.0f;
                continue;
            }
            const float m_new = fmaxf(m[i], step_max);
            const float alpha = exp2f(m[i] - m_new);  // 0 on the first visible step
            const float p = visible ? exp2f(x - m_new) : 0.0f;
            l[i] = l[i] * alpha + warp_sum(p);
            m[i] = m_new;
            prow[lane] = p;
#pragma unroll
            for (u32 d = 0; d < DV; ++d) acc[i][d] *= alpha;
        }
        __syncwarp();  // a warp reads only its own rows of Ps

        // 3c. acc += P·V: lane owns dims d0 .. d0 + DV.
        const u32 d0 = lane * DV;
        if (d0 < D) {
            for (u32 j = 0; j < n; ++j) {
                float vf[DV];
                load_f32<T, DV>(Vs + j * DP + d0, vf);
#pragma unroll
                for (u32 i = 0; i < G::RPW; ++i) {
                    const u32 r = i * WARPS + warp;
                    if (r < R) {
                        const float p = Ps[(warp * G::RPW + i) * CHUNK + j];
#pragma unroll
                        for (u32 d = 0; d < DV; ++d) acc[i][d] += p * vf[d];
                    }
                }
            }
        }
    }

    // 4. Normalised output rows, or this partition's unnormalised state.
    const u32 d0 = lane * DV;
#pragma unroll
    for (u32 i = 0; i < G::RPW; ++i) {
        const u32 r = i * WARPS + warp;
        if (r >= R) continue;
        if (it.partial == NO_PARTIAL) {
            // l > 0 for every valid row: a query always sees its own key.
            const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
            const u64 token = it.q_start + r / nh;
            const u64 head = head0 + r % nh;
            T* o = out + (token * num_heads + head) * D;
#pragma unroll
            for (u32 d = 0; d < DV; ++d) {
                if (d0 + d < D) o[d0 + d] = from_f32<T>(acc[i][d] * inv);
            }
        } else {
            const u64 row = u64(it.partial) * s.rows_per_item + r;
            float* pa = part_acc + row * D;
#pragma unroll
            for (u32 d = 0; d < DV; ++d) {
                if (d0 + d < D) pa[d0 + d] = acc[i][d];
            }
            if (lane == 0) part_ml[row] = make_float2(m[i], l[i]);
        }
    }
}

// Merges the partitions of each split tile: rescale every partial state to
// the common max, sum, normalise. One block per split tile; threads stride
// over (query vector, dim).
template <typename T, u32 DV>
__device__ void combine(T* __restrict__ out, const float* __restrict__ part_acc,
                        const float2* __restrict__ part_ml, const SplitTile* __restrict__ tiles,
                        const Shape s) {
    using G = Geometry<T, DV>;
    const SplitTile st = tiles[blockIdx.x];
    const u32 D = s.head_dim;
    const u32 nh = st.num_heads;
    const u32 R = st.num_tokens * nh;
    if (s.rows_per_item > G::ROWS || nh == 0 || R > s.rows_per_item ||
        st.head_lo + nh > s.group) {
        __trap();
    }
    const u32 num_heads = s.num_kv_heads * s.group;
    const u32 head0 = st.kv_head * s.group + st.head_lo;
    for (u32 idx = threadIdx.x; idx < R * D; idx += blockDim.x) {
        const u32 r = idx / D;
        const u32 c = idx % D;
        float m = neg_inf();
        for (u32 p = 0; p < st.num_partials; ++p) {
            m = fmaxf(m, part_ml[u64(st.first_partial + p) * s.rows_per_item + r].x);
        }
        float l = 0.0f, o = 0.0f;
        for (u32 p = 0; p < st.num_partials; ++p) {
            const u64 row = u64(st.first_partial + p) * s.rows_per_item + r;
            const float2 ml = part_ml[row];
            if (ml.y > 0.0f) {  // a partition that saw no key weighs nothing
                const float w = exp2f(ml.x - m);
                l += ml.y * w;
                o += part_acc[row * D + c] * w;
            }
        }
        const u64 token = st.q_start + r / nh;
        const u64 head = head0 + r % nh;
        out[(token * num_heads + head) * D + c] = from_f32<T>(l > 0.0f ? o / l : 0.0f);
    }
}

}  // namespace attn
}  // namespace tandem

// Entry points: paged_attention_<dtype>_hd<32 * DV> handles head_dim up to
// 32 * DV; the host picks the smallest that fits.
#define TANDEM_ATTENTION_DV(SUFFIX, T, DV, HD)                                                  \
    extern "C" __global__ void __launch_bounds__(tandem::attn::THREADS, tandem::attn::MIN_BLOCKS) \
        paged_attention_##SUFFIX##_hd##HD(T* out, const T* q, const T* arena,                   \
                                          const u32* block_tables,                              \
                                          const tandem::attn::WorkItem* items, float* part_acc, \
                                          float2* part_ml, const tandem::attn::Shape s) {       \
        tandem::attn::attend<T, DV>(out, q, arena, block_tables, items, part_acc, part_ml, s);  \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        paged_attention_combine_##SUFFIX##_hd##HD(T* out, const float* part_acc,                \
                                                  const float2* part_ml,                        \
                                                  const tandem::attn::SplitTile* tiles,         \
                                                  const tandem::attn::Shape s) {                \
        tandem::attn::combine<T, DV>(out, part_acc, part_ml, tiles, s);                         \
    }
#define TANDEM_ATTENTION(SUFFIX, T)        \
    TANDEM_ATTENTION_DV(SUFFIX, T, 1, 32)  \
    TANDEM_ATTENTION_DV(SUFFIX, T, 2, 64)  \
    TANDEM_ATTENTION_DV(SUFFIX, T, 4, 128) \
    TANDEM_ATTENTION_DV(SUFFIX, T, 8, 256)
TANDEM_FOR_EACH_DTYPE(TANDEM_ATTENTION)
