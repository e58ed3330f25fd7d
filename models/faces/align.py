"""Face alignment: the 5-landmark similarity transform onto the ArcFace template and a differentiable warp.

The template is the standard ArcFace 112x112 one (insightface, ``python-package/insightface/utils/face_align.py``,
``arcface_dst``; the same numbers are OpenCV's ``FaceRecognizerSF::alignCrop`` in
``modules/objdetect/src/face_recognize.cpp``), in landmark order right eye, left eye, nose tip, right and left mouth
corners (YuNet's order). The transform is the least-squares similarity (scale, rotation, shift; Umeyama's, which in
2-D is linear least squares over ``[[a, -b], [b, a]]``). The warp samples bilinearly by gathering the four
neighbours of each output pixel (no ``affine_grid``/``GridSample``: gathers and multiplies are what an exported
graph needs); pixels outside the photo read 0, as OpenCV's ``warpAffine`` with its default constant border.
"""

from __future__ import annotations

import torch

ARCFACE_TEMPLATE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                    (70.7299, 92.2041))
ARCFACE_SIZE = 112


def template(size: int = ARCFACE_SIZE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ArcFace landmark template (5, 2) for a ``size`` x ``size`` crop (scaled from 112)."""
    return torch.tensor(ARCFACE_TEMPLATE, dtype=dtype) * (size / ARCFACE_SIZE)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The least-squares similarity mapping ``src`` (N, K, 2) onto ``dst`` (K, 2) or (N, K, 2): (N, 2, 3) matrices
    ``[[a, -b, tx], [b, a, ty]]`` with ``dst ≈ M @ [x, y, 1]``. Differentiable in both."""
    dst = dst.to(src).expand_as(src)
    src_mean, dst_mean = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (s * s).sum((1, 2))
    a = (s * d).sum((1, 2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / norm
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)  # (N, 2, 2)
    shift = dst_mean[:, 0] - (linear @ src_mean[:, 0, :, None])[..., 0]
    return torch.cat([linear, shift[..., None]], 2)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """The inverse of (N, 2, 3) affine maps, as (N, 2, 3)."""
    inverse = torch.linalg.inv(matrix[:, :, :2])
    return torch.cat([inverse, -(inverse @ matrix[:, :, 2:])], 2)


def bilinear_taps(matrix: torch.Tensor, in_size: tuple[int, int], size: tuple[int, int],
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The four bilinear taps of every output pixel of ``cv2.warpAffine(image, M, size)``: what :func:`warp_affine`
    gathers, and what an exported graph takes as inputs instead of the matrices (a gather and its scatter-add).

    Args:
        matrix: (N, 2, 3) maps from image pixels to output pixels (pixel centres at integer coordinates).
        in_size: the image's (height, width); size: the output's (height, width).
        dtype: the float type the source coordinates are computed in (the images').

    Returns:
        ``index`` (N, 4, P) int64 into the flattened image (``y * width + x``, clamped inside it) and ``weight``
        (N, 4, P) in ``dtype``, zero for taps outside the image; P = height x width of the output, taps in the order
        (y0, x0), (y0, x1), (y1, x0), (y1, x1).

    Example:
        >>> index, weight = bilinear_taps(torch.eye(2, 3)[None], (8, 8), (4, 4))   # index (1, 4, 16)
    """
    h, w = in_size
    out_h, out_w = size
    inv = invert_affine(matrix.to(dtype))
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=dtype, device=matrix.device),
                            torch.arange(out_w, dtype=dtype, device=matrix.device), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)])  # (3, P)
    source = inv @ grid  # (N, 2, P)
    sx, sy = source[:, 0], source[:, 1]
    x0, y0 = torch.floor(sx), torch.floor(sy)
    fx, fy = sx - x0, sy - y0
    indices, weights = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)).to(dtype)
            indices.append((yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long())
            weights.append(wx * wy * inside)
    return torch.stack(indices, 1), torch.stack(weights, 1)


def warp_affine(images: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.warpAffine(image, M, size)`` with bilinear interpolation, batched and differentiable.

    Args:
        images: (N, C, H, W).
        matrix: (N, 2, 3) maps from image pixels to output pixels (pixel centres at integer coordinates).
        size: the output's (height, width).

    Returns:
        (N, C, height, width); output pixels whose source falls outside the image blend in zeros.
    """
    n, c, h, w = images.shape
    index, weight = bilinear_taps(matrix.to(images.device), (h, w), size, images.dtype)
    flat = images.reshape(n, c, h * w)
    out = images.new_zeros(n, c, size[0] * size[1])
    for tap in range(index.shape[1]):
        taps = flat.gather(2, index[:, None, tap].expand(n, c, -1))
        out = out + taps * weight[:, None, tap]
    return out.reshape(n, c, *size)


def align_faces(images: torch.Tensor, landmarks: torch.Tensor, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """Aligned ``size`` x ``size`` crops (N, C, size, size) of the faces whose 5 landmarks (N, 5, 2) are given in
    ``images``' (N, C, H, W) pixels — one face per image row (repeat an image for several faces)."""
    matrix = similarity_transform(landmarks.to(images.dtype), template(size, images.dtype).to(images.device))
    return warp_affine(images, matrix, (size, size))
