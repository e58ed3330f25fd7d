"""The numbers of docs/faces.md: parity of our face models with ONNX Runtime and OpenCV, and the judges' pair
decisions, on the development identities. Run from the repository root::

    python tests/faces/measure_parity.py

Needs the ``faces`` extra, onnxruntime and the photos (../shared/data/faces or $COMCLOAK_FACES_DIR).
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import torch
from face_photos import faces_dir  # this folder is the script's own: its first sys.path entry
from test_face_models import PARITY_SIDE, _ort_session

from comcloak.evaluation.face_judge import DlibJudge, FaceJudge, SFaceJudge  # noqa: E402
from comcloak.models.faces import DetectorSettings, align_faces, create_face_model, detect_faces  # noqa: E402
from comcloak.models.faces.detect import OPENCV_SCORE_THRESHOLD, decode, nms  # noqa: E402
from comcloak.models.faces.sface import SFACE_FILE  # noqa: E402
from comcloak.models.faces.yunet import YUNET_FILE, YUNET_STRIDES  # noqa: E402


def load_photos() -> dict[str, np.ndarray]:
    from PIL import Image

    photos = {}
    for path in sorted((faces_dir() / "identities").glob("*/*")):
        image = Image.open(path).convert("RGB")
        image.thumbnail((PARITY_SIDE, PARITY_SIDE), Image.Resampling.BILINEAR)
        photos[f"{path.parent.name}/{path.name}"] = np.asarray(image).copy()
    return photos


def detector_parity(photo: np.ndarray, detector: torch.nn.Module, session) -> tuple[float, float, float]:
    """(max head difference, max box/landmark difference vs ORT, vs OpenCV) for one photo."""
    import cv2

    canvas = np.zeros((PARITY_SIDE, PARITY_SIDE, 3), np.uint8)
    canvas[: photo.shape[0], : photo.shape[1]] = photo
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": canvas[..., ::-1].transpose(2, 0, 1)[None]
                                                  .astype(np.float32)})))
    with torch.no_grad():
        ours = detector(torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255)
    theirs = [{k: torch.from_numpy(outputs[f"{k}_{s}"]) for k in ours[0]} for s in YUNET_STRIDES]
    heads = max(float((a[k] - b[k]).abs().max()) for a, b in zip(ours, theirs) for k in a)
    rows_ours, rows_theirs = decode(ours, PARITY_SIDE, PARITY_SIDE).numpy(), decode(theirs, PARITY_SIDE, PARITY_SIDE)
    rows_theirs = rows_theirs.numpy()
    kept_ours, kept_theirs = nms(rows_ours, DetectorSettings()), nms(rows_theirs, DetectorSettings())
    boxes_ort = float(np.abs(rows_ours[kept_ours] - rows_theirs[kept_theirs])[:, :14].max())
    height, width = photo.shape[:2]
    opencv = cv2.FaceDetectorYN.create(str(YUNET_FILE.path("yunet")), "", (width, height), OPENCV_SCORE_THRESHOLD,
                                            0.3, 5000)
    found = opencv.detect(np.ascontiguousarray(photo[..., ::-1]))[1]
    found = found[np.argsort(-found[:, 14], kind="stable")]
    faces = detect_faces(detector, photo, DetectorSettings(OPENCV_SCORE_THRESHOLD, max_side=None))
    boxes_cv = float(np.abs(np.stack([face.as_row() for face in faces])[:, :14] - found[:, :14]).max())
    return heads, boxes_ort, boxes_cv


def recogniser_parity(photo: np.ndarray, detector, recogniser, session) -> tuple[float, float, float]:
    """(max alignment difference vs OpenCV, share of rounded values differing, SFace cosine torch vs ORT)."""
    import cv2

    face = detect_faces(detector, photo)[0]
    theirs = cv2.FaceRecognizerSF.create(str(SFACE_FILE.path("sface")), "").alignCrop(
        np.ascontiguousarray(photo[..., ::-1]), face.as_row()[None])[..., ::-1]
    crop = align_faces(torch.from_numpy(photo).permute(2, 0, 1)[None].float(),
                       torch.from_numpy(face.landmarks[None]).float())
    ours = crop[0].permute(1, 2, 0).numpy()
    rounded = torch.round(crop)
    with torch.no_grad():
        embedding = recogniser(rounded / 255)[0].numpy()
    reference = session.run(None, {"data": rounded.numpy()})[0][0]
    cosine = float(embedding @ reference / np.linalg.norm(embedding) / np.linalg.norm(reference))
    return float(np.abs(ours - theirs).max()), float((np.round(ours) != theirs).mean()), cosine


def judge_line(judge: FaceJudge, photos: dict[str, np.ndarray]) -> str:
    descriptors = {name: judge.faces(photo)[0].descriptor for name, photo in photos.items()}
    same, different = [], []
    for a, b in itertools.combinations(descriptors, 2):
        (same if a.split("/")[0] == b.split("/")[0] else different).append(judge.distance(descriptors[a],
                                                                                          descriptors[b]))
    return (f"{judge.name}: same-person pairs {sum(d <= judge.threshold for d in same)}/{len(same)} matched "
            f"(largest distance {max(same):.3f}), different {sum(d > judge.threshold for d in different)}/"
            f"{len(different)} separated (smallest {min(different):.3f}); threshold {judge.threshold:.3f}")


def main() -> None:
    import cv2

    photos = load_photos()
    detector, recogniser = create_face_model("yunet"), create_face_model("sface")
    yunet_session, sface_session = _ort_session(YUNET_FILE.path("yunet")), _ort_session(SFACE_FILE.path("sface"))
    detection = np.array([detector_parity(photo, detector, yunet_session) for photo in photos.values()])
    recognition = np.array([recogniser_parity(p, detector, recogniser, sface_session) for p in photos.values()])
    lines = [
        f"photos {len(photos)}; YuNet heads max |torch - ORT| {detection[:, 0].max():.2g}; boxes+landmarks max "
        f"{detection[:, 1].max():.2g} px (ORT), {detection[:, 2].max():.2g} px (OpenCV {cv2.__version__})",
        f"alignment vs OpenCV alignCrop: max {recognition[:, 0].max():.3f} levels, "
        f"{100 * recognition[:, 1].max():.2f}% of values differ after rounding",
        f"SFace cosine(torch, ORT) min {recognition[:, 2].min():.7f} mean {recognition[:, 2].mean():.7f}",
        judge_line(DlibJudge(), photos),
        judge_line(SFaceJudge(), photos),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
