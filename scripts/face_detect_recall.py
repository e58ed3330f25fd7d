"""How many faces YuNet finds on the development photos at several score thresholds (docs/faces.md "Detection").

    python scripts/face_detect_recall.py ../shared/data/faces --thresholds 0.9,0.8,0.7,0.6

Prints, per photo and threshold, the number of faces found at the detector's ``max_side`` (640), and the totals for
the group photos (``groups/``) and the single-person photos (``identities/*/``), where any face beyond one is a
false detection.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.models.faces import DetectorSettings, create_face_model, detect_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces", type=Path, help="the development faces folder (groups/, identities/PERSON/)")
    parser.add_argument("--thresholds", default="0.9,0.8,0.7,0.6", help="comma-separated score thresholds")
    args = parser.parse_args()
    thresholds = [float(value) for value in args.thresholds.split(",")]
    detector = create_face_model("yunet").eval()
    totals = {"groups": [0] * len(thresholds), "identities": [0] * len(thresholds)}
    for kind in totals:
        for path in sorted(p for p in (args.faces / kind).rglob("*") if p.is_file() and p.suffix != ".md"):
            photo = np.asarray(Image.open(path).convert("RGB"))
            counts = [len(detect_faces(detector, photo, DetectorSettings(score_threshold=t))) for t in thresholds]
            totals[kind] = [a + b for a, b in zip(totals[kind], counts)]
            print(f"{path.relative_to(args.faces)}: " + ", ".join(f"{t}: {c}" for t, c in zip(thresholds, counts)))
    for kind, counts in totals.items():
        print(f"total {kind}: " + ", ".join(f"{t}: {c}" for t, c in zip(thresholds, counts)))


if __name__ == "__main__":
    main()
