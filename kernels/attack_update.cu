// Fused attack update: see attack_update.h. Two launches: a per-image sum of |g|, then one elementwise pass.
#include "attack_update.h"

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerImage = 64;

__global__ void abs_sum_kernel(const float* __restrict__ g, float* __restrict__ sums, int64_t per_image) {
  const float* image = g + static_cast<int64_t>(blockIdx.y) * per_image;
  float acc = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < per_image;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc += fabsf(image[i]);
  }
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  __shared__ float warp_sums[kThreads / 32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < (blockDim.x >> 5) ? warp_sums[lane] : 0.f;
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) atomicAdd(sums + blockIdx.y, acc);
  }
}

__global__ void update_kernel(const float* __restrict__ x, const float* __restrict__ m, const float* __restrict__ g,
                              const float* __restrict__ lower, const float* __restrict__ upper, float* x_next,
                              float* m_next, const float* __restrict__ sums, int64_t per_image, int64_t total,
                              float step, float mu) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Same operation order as the torch reference (attacks.loop.attack_update): mu*m, then g/scale, then add.
    const float scale = fmaxf(sums[i / per_image] / static_cast<float>(per_image), 1e-12f);
    const float momentum = __fadd_rn(__fmul_rn(mu, m[i]), __fdiv_rn(g[i], scale));
    const float sign = static_cast<float>((momentum > 0.f) - (momentum < 0.f));
    m_next[i] = momentum;
    x_next[i] = fminf(fmaxf(__fadd_rn(x[i], __fmul_rn(step, sign)), lower[i]), upper[i]);
  }
}

}  // namespace

extern "C" COMCLOAK_API int comcloak_attack_update(const float* x, const float* m, const float* g, const float* lower,
                                      const float* upper, float* x_next, float* m_next, float* abs_sums,
                                      int64_t images, int64_t per_image, float step, float mu, void* stream) {
  if (images <= 0 || per_image <= 0) return static_cast<int>(cudaSuccess);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaError_t status = cudaMemsetAsync(abs_sums, 0, sizeof(float) * images, s);
  if (status != cudaSuccess) return static_cast<int>(status);
  int64_t blocks_per_image = (per_image + kThreads - 1) / kThreads;
  if (blocks_per_image > kMaxBlocksPerImage) blocks_per_image = kMaxBlocksPerImage;
  // gridDim.y is limited to 65535 images per launch.
  for (int64_t first = 0; first < images; first += 65535) {
    const int64_t count = images - first < 65535 ? images - first : 65535;
    abs_sum_kernel<<<dim3(static_cast<unsigned>(blocks_per_image), static_cast<unsigned>(count)), kThreads, 0, s>>>(
        g + first * per_image, abs_sums + first, per_image);
  }
  const int64_t total = images * per_image;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  update_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(x, m, g, lower, upper, x_next, m_next, abs_sums,
                                                                   per_image, total, step, mu);
  return static_cast<int>(cudaGetLastError());
}
