"""MTCNN's cascade (Zhang et al. 2016), as ``facenet-pytorch``'s ``detect_face`` runs it, for one photo.

1. An image pyramid (scales 12/min_face_size · factor^k while the shorter side stays >= 12 px, area resampling);
   PNet proposes 12x12 cells above ``thresholds[0]``; NMS (IoU 0.5) per scale, then 0.7 over all scales; the boxes
   are regressed and made square.
2. RNet on 24x24 crops of the proposals: above ``thresholds[1]``, NMS 0.7, regression, square.
3. ONet on 48x48 crops: above ``thresholds[2]``, 5 landmarks, regression, NMS 0.7 on intersection over the smaller
   box ("Min").

Pixel conventions (1-based crop starts, ``+ 1`` widths) are the package's, so the boxes are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .detect import FaceDetection
from .mtcnn import MTCNN

_CELL, _STRIDE = 12, 2  # PNet's receptive field and output stride
_CENTRE, _GAIN = 127.5, 0.0078125  # the networks' input normalisation on 0..255
_STAGE_NMS, _MERGE_NMS = 0.5, 0.7


@dataclass(frozen=True)
class MtcnnSettings:
    """facenet-pytorch's ``MTCNN`` defaults: faces from 20 px, stage thresholds 0.6/0.7/0.7, pyramid factor 0.709."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, smaller: bool = False) -> torch.Tensor:
    """Greedy NMS, best score first: torchvision's IoU on (x1, y1, x2, y2), or (``smaller``) the package's numpy
    "Min" overlap with ``+ 1`` sizes. Returns kept indices."""
    x1, y1, x2, y2 = boxes.unbind(1)
    extra = 1.0 if smaller else 0.0
    area = (x2 - x1 + extra) * (y2 - y1 + extra)
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel():
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + extra).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + extra).clamp(min=0)
        inter = w * h
        overlap = inter / (torch.minimum(area[i], area[rest]) if smaller else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return torch.tensor(keep, dtype=torch.long)


def _regress(boxes: torch.Tensor, reg: torch.Tensor, extra: float = 1.0) -> torch.Tensor:
    """Box regression; the package sizes boxes with ``+ 1`` except after PNet (``extra=0``)."""
    w, h = boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra
    shift = torch.stack([w, h, w, h], 1) * reg
    return torch.cat([boxes[:, :4] + shift, boxes[:, 4:]], 1)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    x1, y1 = boxes[:, 0] + w * 0.5 - side * 0.5, boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.cat([torch.stack([x1, y1, x1 + side, y1 + side], 1), boxes[:, 4:]], 1)


def _crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised ``size`` x ``size`` area-resampled crops of (1, 3, H, W) 0..255 inside the (clipped) boxes."""
    height, width = image.shape[-2:]
    corners = boxes[:, :4].trunc().int().tolist()
    crops = []
    for x, y, ex, ey in corners:
        x, y, ex, ey = max(x, 1), max(y, 1), min(ex, width), min(ey, height)
        if ey > y - 1 and ex > x - 1:
            crops.append(F.interpolate(image[:, :, y - 1 : ey, x - 1 : ex], size=(size, size), mode="area"))
    return (torch.cat(crops) - _CENTRE) * _GAIN


def _propose(model: MTCNN, image: torch.Tensor, settings: MtcnnSettings) -> torch.Tensor:
    """Stage 1: (K, 5) square boxes (x1, y1, x2, y2, score) proposed by PNet over the pyramid."""
    height, width = image.shape[-2:]
    scale, shorter = _CELL / settings.min_face_size, min(height, width) * _CELL / settings.min_face_size
    found = []
    while shorter >= _CELL:
        resized = F.interpolate(image, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
        reg, probs = model.pnet((resized - _CENTRE) * _GAIN)
        mask = probs[0, 1] >= settings.thresholds[0]
        cells = mask.nonzero().to(image.dtype).flip(1)  # (x, y) grid positions
        corners = torch.cat([((_STRIDE * cells + 1) / scale).floor(), ((_STRIDE * cells + _CELL) / scale).floor()], 1)
        boxes = torch.cat([corners, probs[0, 1][mask][:, None], reg[0][:, mask].T], 1)
        found.append(boxes[_nms(boxes[:, :4], boxes[:, 4], _STAGE_NMS)] if len(boxes) else boxes)
        scale, shorter = scale * settings.factor, shorter * settings.factor
    boxes = torch.cat(found) if found else image.new_zeros(0, 9)
    boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], _MERGE_NMS)] if len(boxes) else boxes
    return _square(_regress(boxes[:, :5], boxes[:, 5:9], extra=0.0))


@torch.no_grad()
def detect_faces_mtcnn(model: MTCNN, photo: np.ndarray, settings: MtcnnSettings = MtcnnSettings()
                       ) -> list[FaceDetection]:
    """The faces MTCNN finds in a uint8 (H, W, 3) RGB photo, best score first (boxes as (x, y, w, h))."""
    device = next(model.parameters()).device
    image = torch.as_tensor(np.array(photo), device=device).permute(2, 0, 1)[None].float()
    boxes = _propose(model, image, settings)
    if len(boxes):
        reg, probs = model.rnet(_crops(image, boxes, 24))
        passed = probs[:, 1] > settings.thresholds[1]
        boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], 1)
        kept = _nms(boxes[:, :4], boxes[:, 4], _MERGE_NMS) if len(boxes) else torch.zeros(0, dtype=torch.long)
        boxes = _square(_regress(boxes[kept], reg[passed][kept]))
    if not len(boxes):
        return []
    reg, marks, probs = model.onet(_crops(image, boxes, 48))
    passed = probs[:, 1] > settings.thresholds[2]
    boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], 1)
    size = (boxes[:, 2:4] - boxes[:, 0:2] + 1)[:, None, :]  # (K, 1, 2)
    points = torch.stack([marks[passed, :5], marks[passed, 5:]], 2) * size + boxes[:, None, 0:2] - 1
    boxes = _regress(boxes, reg[passed])
    kept = _nms(boxes[:, :4], boxes[:, 4], _MERGE_NMS, smaller=True) if len(boxes) else []
    faces = [FaceDetection((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                           points[i].double().cpu().numpy(), float(b[4])) for i, b in zip(kept, boxes[kept])]
    return sorted(faces, key=lambda face: -face.score)
