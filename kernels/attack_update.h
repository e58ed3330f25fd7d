// Fused attack update of DESIGN §2 (one MIM/BIM/FGSM step after the gradient), C ABI for ctypes.
//
//   m_next = mu * m + g / max(mean(|g|), 1e-12)        per image (L1 normalisation)
//   x_next = min(max(x + step * sign(m_next), lower), upper)
//
// step is +alpha (untargeted) or -alpha (targeted); lower/upper are max(x0 - eps, 0) and min(x0 + eps, 1), so the
// clip is the projection onto the eps-ball and [0, 1]. All tensors are contiguous float32 (N, C, H, W), the same
// shape; outputs may alias inputs (every element is read before it is written, by the same thread). `abs_sums` is a
// float32 workspace of N elements (zeroed here). Everything runs on `stream`, so the call is capturable in a CUDA
// graph. Returns a cudaError_t as int (0 = success).
#pragma once
#include <stdint.h>

#ifndef COMCLOAK_API
#define COMCLOAK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

COMCLOAK_API int comcloak_attack_update(const float* x, const float* m, const float* g, const float* lower,
                                        const float* upper, float* x_next, float* m_next, float* abs_sums,
                                        int64_t images, int64_t per_image, float step, float mu, void* stream);

#ifdef __cplusplus
}
#endif
