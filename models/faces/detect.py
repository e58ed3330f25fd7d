"""Face detection with a YuNet-family detector: padding, decoding of the heads and NMS, as OpenCV's
``FaceDetectorYN`` does (opencv/modules/objdetect/src/face_detect.cpp, 2023mar heads).

Per stride s and grid cell (row r, column c): score = sqrt(clamp(cls) * clamp(obj)); box centre
((c + dx) s, (r + dy) s), size (exp(dw) s, exp(dh) s); landmark k at ((c + kx_k) s, (r + ky_k) s). Cells below the
score threshold are dropped, then greedy NMS over the boxes truncated to integers (OpenCV's ``Rect2i``), best score
first. The photo is padded on the right and bottom with zeros to multiples of 32, as OpenCV pads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .yunet import YUNET_ALIGN, YUNET_STRIDES

_FAR = 1e7  # boxes are clipped to +-_FAR pixels before truncation, so integer IoU cannot overflow


OPENCV_SCORE_THRESHOLD = 0.9  # OpenCV FaceDetectorYN.create's default (the parity tests' setting)
# A missed face is an unprotected face, so the cloak favours recall: on the dev group photos (scripts/
# face_detect_recall.py) OpenCV's 0.9 missed 6 of 35 faces at 640 px (2 with the 1920 px second pass; tilted and
# turned faces scoring 0.86-0.90); 0.8 finds all 35 with no extra detection on the single-person photos (0.6, one
# pass, added two false faces on one).
PROTECT_SCORE_THRESHOLD = 0.8


@dataclass(frozen=True)
class DetectorSettings:
    """Where YuNet's detections are cut: ``score_threshold`` (the cloak's :data:`PROTECT_SCORE_THRESHOLD`, below
    OpenCV's 0.9 for recall), NMS IoU 0.3 and top 5000 before NMS (OpenCV's ``FaceDetectorYN.create`` defaults);
    ``max_side``: photos whose longer side is larger are downscaled (antialiased) to it before detection, and the
    results scaled back (None: detect at full resolution, one pass); ``fine_side``: such photos get a second pass at
    this longer side (or full resolution if smaller), which adds the faces the first pass makes too small to find
    (those not overlapping a first-pass face by more than the NMS IoU; None: one pass)."""

    score_threshold: float = PROTECT_SCORE_THRESHOLD
    nms_threshold: float = 0.3
    top_k: int = 5000
    max_side: int | None = 640
    # YuNet finds faces down to ~10 px: at 640 px a 50 px face of a 4000 px phone photo is 8 px and is missed
    # (measured: docs/faces.md "Detection"); a second pass at 1920 px finds it for ~0.3 s on 2 CPU cores.
    fine_side: int | None = 1920


@dataclass(frozen=True)
class FaceDetection:
    """One face in photo pixels: ``box`` (x, y, width, height), ``landmarks`` (5, 2) — right eye, left eye, nose
    tip, right and left mouth corners (the person's right is the image's left) — and ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    def as_row(self) -> np.ndarray:
        """OpenCV's 15-float row: x, y, w, h, ten landmark coordinates, score."""
        return np.concatenate([np.asarray(self.box), self.landmarks.reshape(-1), [self.score]]).astype(np.float32)


def pad_to_stride(image: torch.Tensor, multiple: int = YUNET_ALIGN) -> torch.Tensor:
    """(N, C, H, W) zero-padded on the right and bottom to multiples of ``multiple``."""
    height, width = image.shape[-2:]
    return F.pad(image, (0, -width % multiple, 0, -height % multiple))


def decode(levels: list[dict[str, torch.Tensor]], height: int, width: int) -> torch.Tensor:
    """The heads of one image (batch index 0) -> (cells, 15) rows of OpenCV's layout, for a padded input of
    ``height`` x ``width``."""
    rows = []
    for stride, out in zip(YUNET_STRIDES, levels):
        cols = width // stride
        cells = torch.arange(out["cls"].shape[1], device=out["cls"].device)
        c, r = (cells % cols).to(torch.float32), torch.div(cells, cols, rounding_mode="floor").to(torch.float32)
        score = torch.sqrt(out["cls"][0, :, 0].clamp(0, 1) * out["obj"][0, :, 0].clamp(0, 1))
        bbox, kps = out["bbox"][0], out["kps"][0]
        cx, cy = (c + bbox[:, 0]) * stride, (r + bbox[:, 1]) * stride
        w, h = torch.exp(bbox[:, 2]) * stride, torch.exp(bbox[:, 3]) * stride
        kx, ky = (kps[:, 0::2] + c[:, None]) * stride, (kps[:, 1::2] + r[:, None]) * stride
        marks = torch.stack([kx, ky], dim=2).flatten(1)
        rows.append(torch.cat([torch.stack([cx - w / 2, cy - h / 2, w, h], 1), marks, score[:, None]], 1))
    return torch.cat(rows)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one integer (x, y, w, h) box with many, as OpenCV's ``rectOverlap``."""
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _integer_boxes(rows: np.ndarray) -> np.ndarray:
    """The rows' boxes truncated to integers as OpenCV's ``Rect2i`` (non-finite values and overflow clipped)."""
    return np.trunc(np.clip(np.nan_to_num(rows[:, :4].astype(np.float64)), -_FAR, _FAR)).astype(np.int64)


def nms(rows: np.ndarray, settings: DetectorSettings) -> np.ndarray:
    """Indices of ``rows`` (OpenCV layout) kept: above the score threshold, best first, greedy IoU suppression on
    the boxes truncated to integers."""
    scores = rows[:, 14]
    # A non-finite box (exp overflow of an untrained head) is never a face.
    candidates = np.flatnonzero((scores >= settings.score_threshold) & np.isfinite(rows).all(1))
    order = candidates[np.argsort(-scores[candidates], kind="stable")][: settings.top_k]
    boxes = _integer_boxes(rows)
    keep: list[int] = []
    for index in order:
        if not keep or np.all(_iou(boxes[index], boxes[keep]) <= settings.nms_threshold):
            keep.append(int(index))
    return np.asarray(keep, dtype=np.int64)


def _working_scale(longest: int, side: int | None) -> float:
    return 1.0 if side is None or longest <= side else side / longest


def _rows_at(detector: torch.nn.Module, image: torch.Tensor, side: int | None) -> np.ndarray:
    """The decoded rows (OpenCV layout) of ``image`` (1, 3, H, W) downscaled to ``side``, in its pixels."""
    height, width = image.shape[-2:]
    scale = _working_scale(max(height, width), side)
    if scale != 1.0:
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    padded = pad_to_stride(image)
    rows = decode(detector(padded), *padded.shape[-2:]).float().cpu().numpy().astype(np.float64)
    return rows / np.r_[np.full(14, scale), 1.0]


@torch.no_grad()
def detect_faces(detector: torch.nn.Module, photo: np.ndarray | torch.Tensor,
                 settings: DetectorSettings = DetectorSettings()) -> list[FaceDetection]:
    """The faces in one photo, best score first (one pass at ``settings.max_side``; for a larger photo a second at
    ``settings.fine_side`` adds the faces the first missed).

    ``photo``: uint8 (H, W, 3) RGB, or float (3, H, W) in [0, 1]. Example::

        faces = detect_faces(create_face_model("yunet"), load_photo("group.jpg"))
        faces[0].box, faces[0].landmarks            # (x, y, w, h), (5, 2) in photo pixels
    """
    from comcloak.codecs.tensors import to_tensor

    device = next(detector.parameters()).device
    if isinstance(photo, np.ndarray):
        image = to_tensor(photo[None] if photo.flags.writeable else photo[None].copy(), device)
    else:
        image = photo[None].to(device)
    rows = _rows_at(detector, image, settings.max_side)
    rows = rows[nms(rows, settings)]
    if settings.max_side is not None and settings.fine_side is not None and max(image.shape[-2:]) > settings.max_side:
        # The second pass only adds faces: one the first pass found keeps its box and landmarks from that pass.
        fine = _rows_at(detector, image, settings.fine_side)
        fine = fine[nms(fine, settings)]
        boxes, fine_boxes = _integer_boxes(rows), _integer_boxes(fine)
        added = [index for index, box in enumerate(fine_boxes)
                 if not len(boxes) or np.all(_iou(box, boxes) <= settings.nms_threshold)]
        rows = np.concatenate([rows, fine[added]])
        rows = rows[np.argsort(-rows[:, 14], kind="stable")]
    return [FaceDetection(tuple(float(v) for v in row[:4]), row[4:14].reshape(5, 2), float(row[14])) for row in rows]
