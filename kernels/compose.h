// Full-resolution compose (the last step of Cloaker.cloak), C ABI for ctypes.
//
//   out[n, y, x, c] = clamp(rint(photo[n, y, x, c] + 255 * up(delta)[n, c, y, x]), 0, 255)
//
// photo and out: contiguous uint8 (N, H, W, 3); delta: contiguous float32 (N, 3, h, w), the attack-view
// perturbation on the [0, 1] scale; up = bilinear resize to (H, W) with PyTorch's align_corners=False convention
// (F.interpolate(mode="bilinear")). rint rounds half to even, like torch.round. Runs on `stream`. Returns a
// cudaError_t as int (0 = success).
#pragma once
#include <stdint.h>

#ifndef COMCLOAK_API
#define COMCLOAK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

COMCLOAK_API int comcloak_compose(const uint8_t* photo, const float* delta, uint8_t* out, int64_t images,
                                  int64_t height, int64_t width, int64_t delta_height, int64_t delta_width,
                                  void* stream);

#ifdef __cplusplus
}
#endif
