#!/usr/bin/env python3
"""Writes a model card (models/comodel-<codec>.md) for every shipped ComModel and prints the summary table.

Usage: scripts/write-model-cards.py PHOTO_DIR [WEIGHTS_DIR]

Every number is measured here, on the dev photos that ``comcloak train`` held out (a third, chosen by name): the
ComModel's MAE against its own codec and against the other shipped settings, the identity baseline and, for JPEG,
diff-JPEG. Parameters and FLOPs are counted with torch.utils.flop_counter at 1x3x224x224.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from comcloak.atomic import atomic_writer
from comcloak.codecs import parse_codec
from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.codecs.pairs import held_out_views, list_photos, split_held_out
from comcloak.codecs.real import Jpeg
from comcloak.models import comodel_io, read_safetensors_metadata
from comcloak.models.training import comodel_mae, identity_mae

PAPER_MAE = {"jpeg:75": 1.66, "jpeg:50": 2.04, "jpeg:25": 2.47, "webp:75": 2.55, "webp:50": 2.88, "webp:25": 3.44,
             "jp2:10": 2.67, "jp2:20": 3.17}
PROVENANCE = ("the dev photo set built by `../shared/data/dev-photos.sh` from the Debian packages `opencv-doc` "
              "(OpenCV sample images), `mate-backgrounds` (MATE nature wallpapers) and `plasma-workspace-wallpapers` "
              "(KDE Plasma wallpapers)")


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def flops_and_params(model: torch.nn.Module) -> tuple[float, int]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9, sum(p.numel() for p in model.parameters())


def measure(codec: str, path: Path, views: dict) -> tuple[dict, list[tuple], dict[str, str]]:
    """The ComModel at ``path``: its summary row, its MAE against every shipped codec's held-out ``views`` (rows of
    codec, MAE, identity MAE, diff-JPEG MAE or None) and its safetensors header."""
    model = comodel_io.load_comodel(path)
    header = read_safetensors_metadata(path)
    gflops, params = flops_and_params(model)
    rows = []
    for other, pairs in views.items():
        mae = comodel_mae(model, pairs.originals, pairs.compressed)
        diffjpeg = None
        parsed = parse_codec(other)
        if isinstance(parsed, Jpeg):
            diffjpeg = comodel_mae(DiffJPEG(parsed.quality, parsed.subsampling), pairs.originals, pairs.compressed)
        rows.append((other, mae, identity_mae(pairs), diffjpeg))
    own = next(row for row in rows if row[0] == codec)
    entry = {"codec": codec, "file": path.name, "mae": own[1], "identity_mae": own[2],
             "diffjpeg_mae": own[3], "paper_mae": PAPER_MAE.get(codec), "params": params,
             "gflops": gflops, "bytes": path.stat().st_size, "steps": int(header["comcloak.train.steps"]),
             "train_seconds": int(header["comcloak.train.seconds"])}
    return entry, rows, header


def card_lines(entry: dict, path: Path, header: dict[str, str], rows: list[tuple], split: tuple[int, int]) -> list[str]:
    """The markdown card of one ComModel (``split``: training and held-out photo counts)."""
    codec, params, gflops = entry["codec"], entry["params"], entry["gflops"]
    train_count, held_count = split
    config = json.loads(header[comodel_io.CONFIG_KEY])
    # Architecture flags that differ from what `comcloak train` picks by itself.
    arch_flags = (f" --refine-width {config['refine_width']} --refine-levels {config['refine_levels']}"
                  if config.get("refine_levels") else "")
    # Files trained before these keys were recorded used the defaults: 24 views per photo, 2 threads.
    views_per_photo = int(header.get("comcloak.train.views_per_photo", 24))
    threads = int(header.get("comcloak.train.threads", 2))
    if views_per_photo != 24:
        arch_flags += f" --views-per-photo {views_per_photo}"
    lines = [
        f"# ComModel for `{codec}` — `{path.name}`",
        "",
        f"A `{header[comodel_io.ARCH_KEY]}` (transform-coding ComModel, `models/comodel_tc.py`) trained by "
        f"`comcloak train` to imitate the real codec `{codec}` at the attack resolution (224×224 views). "
        f"Selected with `--through comodel:{codec}`.",
        "",
        "## Architecture",
        f"- configuration: `{json.dumps(config, sort_keys=True)}`",
        f"- {params:,} parameters, {gflops:.3f} GFLOPs at 1×3×224×224 (torch.utils.flop_counter), stored as "
        f"fp16 safetensors ({path.stat().st_size / 1024:.0f} KiB)",
        "",
        "## Training",
        f"- photos: {header['comcloak.train.photos']} training photos from {PROVENANCE}; "
        f"{train_count} in the training split, {held_count} held out by name "
        "(`comcloak.codecs.pairs.split_held_out`: SHA-1 of the file name, first byte mod 3 == 0).",
        f"- pairs: {views_per_photo} random views per photo (RandomResizedCrop, area 0.3–1, flipped at random "
        "before compression), resized to 224×224 and compressed there by the real codec (Pillow); training "
        "crops of 128 px at offsets that are multiples of 16, so the codec's block grid stays aligned.",
        f"- {header['comcloak.train.steps']} steps of Adam, batch 16, L1 loss, cosine decay from 1e-3 to 1e-5, "
        f"seed {header['comcloak.train.seed']}, {threads} CPU thread{'s' if threads > 1 else ''}: "
        f"{header['comcloak.train.seconds']} s on a "
        "2-core CPU (pair building included).",
        f"- command: `comcloak train --codec {codec} --photos DEV_PHOTOS -o {path.name} "
        f"--steps {header['comcloak.train.steps']}{arch_flags} --seed {header['comcloak.train.seed']} "
        f"--threads {threads}` "
        "(all nine: `scripts/train-comodels.sh DEV_PHOTOS`).",
        "",
        f"## Accuracy on the {held_count} held-out dev photos (MAE, 0–255 scale, 224×224)",
        "",
        "| real codec | this ComModel | identity | diff-JPEG | paper's ComModel |",
        "|---|---|---|---|---|",
    ]
    for other, mae, identity, diffjpeg in rows:
        paper = PAPER_MAE.get(other)
        mark = " (own codec)" if other == codec else ""
        lines.append(f"| `{other}`{mark} | {mae:.3f} | {identity:.3f} | "
                     f"{_optional(diffjpeg)} | {'' if paper is None else paper} |")
    lines += ["", "Rows other than its own codec show how the model transfers; use the ComModel of the codec you "
                  "expect. Regenerate with `scripts/write-model-cards.py DEV_PHOTOS`.", ""]
    return lines


def print_summary(summary: list[dict]) -> None:
    """The summary table of every card, as markdown on stdout."""
    print("| codec | ComModel MAE | paper | identity | diff-JPEG | params | GFLOPs | KiB | steps | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in summary:
        print(f"| `{row['codec']}` | {row['mae']:.3f} | {row['paper_mae'] or ''} | {row['identity_mae']:.3f} | "
              f"{_optional(row['diffjpeg_mae'])} | {row['params']:,} | "
              f"{row['gflops']:.3f} | {row['bytes'] / 1024:.0f} | {row['steps']} | {row['train_seconds']} |")


def main() -> int:
    photos_dir = Path(sys.argv[1])
    weights_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else comodel_io.WEIGHTS_DIR
    cards_dir = Path(__file__).resolve().parent.parent / "models"
    train_photos, held_out = split_held_out(list_photos(photos_dir))
    shipped = comodel_io.list_shipped_comodels(weights_dir)
    views = {codec: held_out_views(held_out, codec) for codec in shipped}
    summary = []
    for codec, path in shipped.items():
        entry, rows, header = measure(codec, path, views)
        summary.append(entry)
        lines = card_lines(entry, path, header, rows, (len(train_photos), len(held_out)))
        card = cards_dir / path.name.replace(".safetensors", ".md")
        with atomic_writer(card) as handle:
            handle.write("\n".join(lines).encode())
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
