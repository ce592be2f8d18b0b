// Shared by every tandem CUDA source: NVRTC compiles each kernel file with
// this text in front of it (see sources.rs), so there is no include path for
// tandem's own code, only for the CUDA headers.
//
// Conventions for all kernels:
// - Element types are float, __nv_bfloat16 and __half; maths is in f32 and
//   every stored value is rounded once (round to nearest even).
// - Entry points are `extern "C"` wrappers named `<op>_<dtype>` around one
//   template, so the host finds them by name without C++ mangling.
// - Sizes are u32 (the host checks they fit); offsets into large buffers
//   (the KV arena, activations) are computed in u64.
// - Every index a kernel reads from a metadata buffer is bounds-checked
//   before it is used for an address, even though the host validated the
//   metadata: a bad entry leaves its output untouched (or NaN) instead of
//   reading or writing outside a buffer.

#include <cuda_bf16.h>  // also brings cuda_fp16.h

typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

namespace tandem {

// ---- element conversions ------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

// ---- 16-byte vectors ----------------------------------------------------

// Elements of T in one 16-byte access: 8 for bf16/f16, 4 for f32.
template <typename T>
struct Vec16 {
    static constexpr int N = 16 / sizeof(T);
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<u64>(p) & 15) == 0;
}

// Loads COUNT consecutive elements at `p` and widens them to f32, with the
// widest accesses COUNT * sizeof(T) allows. `p` must be aligned to that many
// bytes (or to 16 when it is a multiple of 16).
template <typename T, int COUNT>
__device__ __forceinline__ void load_f32(const T* p, float (&out)[COUNT]) {
    constexpr int BYTES = COUNT * int(sizeof(T));
    if constexpr (BYTES % 16 == 0) {
        constexpr int PER = 16 / int(sizeof(T));
#pragma unroll
        for (int b = 0; b < BYTES / 16; ++b) {
            const uint4 raw = reinterpret_cast<const uint4*>(p)[b];
            const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int i = 0; i < PER; ++i) out[b * PER + i] = to_f32(e[i]);
        }
    } else if constexpr (BYTES == 8) {
        const uint2 raw = *reinterpret_cast<const uint2*>(p);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < COUNT; ++i) out[i] = to_f32(e[i]);
    } else if constexpr (BYTES == 4) {
        const unsigned raw = *reinterpret_cast<const unsigned*>(p);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < COUNT; ++i) out[i] = to_f32(e[i]);
    } else {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) out[i] = to_f32(p[i]);
    }
}

// Rounds 16 bytes' worth of f32 to T and stores them at 16-byte aligned `p`.
template <typename T>
__device__ __forceinline__ void store16(T* p, const float (&in)[Vec16<T>::N]) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < Vec16<T>::N; ++i) e[i] = from_f32<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}

// ---- reductions ---------------------------------------------------------

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// Sum of `x` over the thread block, returned to every thread. blockDim.x
// must be a multiple of 32 (at most 1024) and every thread must call it;
// `scratch` is 32 floats of shared memory the caller does not touch between
// calls.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int num_warps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();  // a previous call may still be reading `scratch`
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < num_warps ? scratch[lane] : 0.0f;
    return warp_sum(x);
}

}  // namespace tandem

// One extern "C" entry point per element type: X(suffix, type).
#define TANDEM_FOR_EACH_DTYPE(X) \
    X(f32, float)                \
    X(bf16, __nv_bfloat16)       \
    X(f16, __half)
