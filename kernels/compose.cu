// Full-resolution compose: see compose.h. One thread per output pixel, three channels each.
#include "compose.h"

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;

// PyTorch's area_pixel_compute_source_index for align_corners=False, clamped at 0 like upsample_bilinear2d.
__device__ __forceinline__ float source_index(float scale, int64_t dst) {
  const float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  return src < 0.f ? 0.f : src;
}

__global__ void compose_kernel(const uint8_t* __restrict__ photo, const float* __restrict__ delta,
                               uint8_t* __restrict__ out, int64_t images, int64_t height, int64_t width,
                               int64_t delta_height, int64_t delta_width, float scale_y, float scale_x) {
  const int64_t pixels = images * height * width;
  const int64_t plane = delta_height * delta_width;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = p % width;
    const int64_t y = (p / width) % height;
    const int64_t n = p / (width * height);
    const float sy = source_index(scale_y, y);
    const float sx = source_index(scale_x, x);
    const int64_t y0 = static_cast<int64_t>(sy);
    const int64_t x0 = static_cast<int64_t>(sx);
    const int64_t y1 = y0 + (y0 < delta_height - 1 ? 1 : 0);
    const int64_t x1 = x0 + (x0 < delta_width - 1 ? 1 : 0);
    const float ly = sy - static_cast<float>(y0);
    const float lx = sx - static_cast<float>(x0);
    const float hy = 1.f - ly;
    const float hx = 1.f - lx;
    for (int c = 0; c < 3; ++c) {
      const float* d = delta + (n * 3 + c) * plane;
      const float up = hy * (hx * d[y0 * delta_width + x0] + lx * d[y0 * delta_width + x1]) +
                       ly * (hx * d[y1 * delta_width + x0] + lx * d[y1 * delta_width + x1]);
      const float value = rintf(static_cast<float>(photo[p * 3 + c]) + 255.f * up);
      out[p * 3 + c] = static_cast<uint8_t>(fminf(fmaxf(value, 0.f), 255.f));
    }
  }
}

}  // namespace

extern "C" COMCLOAK_API int comcloak_compose(const uint8_t* photo, const float* delta, uint8_t* out, int64_t images,
                                int64_t height, int64_t width, int64_t delta_height, int64_t delta_width,
                                void* stream) {
  const int64_t pixels = images * height * width;
  if (pixels <= 0) return static_cast<int>(cudaSuccess);
  const float scale_y = static_cast<float>(delta_height) / static_cast<float>(height);
  const float scale_x = static_cast<float>(delta_width) / static_cast<float>(width);
  int64_t blocks = (pixels + kThreads - 1) / kThreads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  compose_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      photo, delta, out, images, height, width, delta_height, delta_width, scale_y, scale_x);
  return static_cast<int>(cudaGetLastError());
}
