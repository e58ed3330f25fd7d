"""The outputs of ``comcloak eval``: a markdown report, a grouped bar chart and an example grid (PNG, Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comcloak.atomic import atomic_writer
from comcloak.evaluation.sheet import amplified_difference

# Distinguishable bar colours (Okabe-Ito), cycled when there are more rows.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def success_cells(payload: dict) -> tuple[list[tuple[str, str]], list[str], dict[tuple[str, str, str], dict]]:
    """(rows as (attack, through), codec columns, result by (attack, through, codec)) in first-seen order."""
    cells = {(r["attack"], r["through"], r["codec"]): r for r in payload["results"]}
    rows = list(dict.fromkeys((r["attack"], r["through"]) for r in payload["results"]))
    codecs = list(dict.fromkeys(r["codec"] for r in payload["results"]))
    return rows, codecs, cells


def markdown_report(payload: dict) -> str:
    """Success-rate table with counts (rows attack x through, columns codecs), clean agreement, quality."""
    rows, codecs, cells = success_cells(payload)
    mode = "targeted (label = (clean + 500) mod 1000)" if payload["targeted"] else "untargeted (label != clean)"
    lines = [
        f"# comcloak eval — {payload['protocol']} protocol",
        "",
        f"{payload['n_photos']} photos, classifier `{payload['classifier']}`, eps {payload['eps']:g}/255, "
        f"{payload['steps']} steps (FGSM: 1), {mode}; {payload['seconds']:.0f} s.",
        "",
        "| attack | through | " + " | ".join(f"`{codec}`" for codec in codecs) + " |",
        "|---|---|" + "---:|" * len(codecs),
    ]
    for attack, through in rows:
        values = []
        for codec in codecs:
            cell = cells.get((attack, through, codec))
            values.append("" if cell is None else
                          f"{100 * cell['success_rate']:.0f}% ({round(cell['success_rate'] * cell['n'])}/{cell['n']})")
        through_cell = through.replace("|", "\\|")  # a mix:/eot: spec's bars would split the table's columns
        lines.append(f"| {attack} | `{through_cell}` | " + " | ".join(values) + " |")
    agreement = {row["codec"]: row for row in payload.get("clean_agreement", [])}
    if agreement:
        values = [f"{100 * agreement[c]['agreement']:.0f}% ({round(agreement[c]['agreement'] * agreement[c]['n'])}"
                  f"/{agreement[c]['n']})" if c in agreement else "" for c in codecs]
        lines.append("| clean | (no cloak) | " + " | ".join(values) + " |")
        lines += ["", "The *clean* row is the agreement of the uncloaked photo's label after the codec with its label "
                      "before: how much the codec alone changes the classifier's answer."]
    quality = payload.get("quality")
    if quality:
        where = ("full resolution, against the original photo" if payload["protocol"] == "archive"
                 else "224×224, against the clean view")
        lines += ["", f"Quality of the cloaks ({where}): "
                      f"PSNR mean {quality['psnr_mean']:.2f} dB, 5th percentile {quality['psnr_p05']:.2f} dB; "
                      f"SSIM mean {quality['ssim_mean']:.4f}; "
                      f"max L∞ {quality['linf_max']:.0f}/255"
                      + (f"; flat-quarter RMS {quality['flat_rms_mean']:.2f}/255." if "flat_rms_mean" in quality
                         else ".")]  # the archive protocol's full-resolution cloaks have it, the paper's views not
    failed = payload.get("failed_photos") or []
    if failed:
        lines += ["", f"Skipped {len(failed)} photo(s) that did not load:"] + [f"- {message}" for message in failed]
    return "\n".join(lines) + "\n"


def draw_percent_grid(draw: ImageDraw.ImageDraw, left: int, right: int, top: int, bottom: int) -> None:
    """A bar chart's horizontal grid at 0, 20, ..., 100 % (``bottom`` is 0 %, ``top`` 100 %) with its labels;
    ``right`` is the chart's right edge."""
    for percent in range(0, 101, 20):
        y = bottom - (bottom - top) * percent / 100
        draw.line([(left, y), (right, y)], fill="#dddddd")
        draw.text((8, y - 6), f"{percent}%", fill="black")


def draw_legend(draw: ImageDraw.ImageDraw, labels: list[str], left: int, top: int, per_column: int,
                column_width: int) -> None:
    """Swatches in :data:`PALETTE` order with their labels, ``per_column`` to a column, 20 px apart."""
    for index, label in enumerate(labels):
        column, line = divmod(index, per_column)
        x, y = left + column * column_width, top + line * 20
        draw.rectangle([x, y, x + 12, y + 12], fill=PALETTE[index % len(PALETTE)])
        draw.text((x + 18, y), label, fill="black")


def save_png(image: Image.Image, destination: str | Path) -> Path:
    """Write ``image`` as PNG atomically; returns the path."""
    destination = Path(destination)
    with atomic_writer(destination) as handle:
        image.save(handle, format="PNG")
    return destination


def write_bar_chart(payload: dict, destination: str | Path, width: int = 1200, height: int = 520) -> Path:
    """Grouped bar chart: one group per codec, one bar per (attack, through) row, success rate 0-100 %."""
    rows, codecs, cells = success_cells(payload)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, 16, 40, height - 120
    draw.text((left, 12), f"{'targeted' if payload['targeted'] else 'untargeted'} success after each codec - "
                          f"{payload['classifier']}, eps {payload['eps']:g}/255, {payload['n_photos']} photos",
              fill="black")
    draw_percent_grid(draw, left, width - right, top, bottom)
    group_width = (width - left - right) / max(len(codecs), 1)
    bar_width = max(2.0, (group_width - 12) / max(len(rows), 1))
    for g, codec in enumerate(codecs):
        x0 = left + g * group_width + 6
        for r, key in enumerate(rows):
            cell = cells.get((*key, codec))
            if cell is None:
                continue
            y = bottom - (bottom - top) * cell["success_rate"]
            draw.rectangle([x0 + r * bar_width, y, x0 + (r + 1) * bar_width - 1, bottom],
                           fill=PALETTE[r % len(PALETTE)])
        draw.text((x0, bottom + 6), codec, fill="black")
    draw.line([(left, bottom), (width - right, bottom)], fill="black")
    draw_legend(draw, [f"{attack} through {through}" for attack, through in rows], left, bottom + 30, 4, 300)
    return save_png(image, destination)


def write_example_grid(
    clean_views: np.ndarray, cloaked: dict[tuple[str, str], np.ndarray], eps: float, destination: str | Path,
    photos: int = 4,
) -> Path:
    """The first ``photos`` clean views, then each cloak and its amplified difference, one row per photo."""
    keys = list(cloaked)
    tile = clean_views.shape[1]
    gap, caption = 4, 14
    columns = 1 + 2 * len(keys)
    count = min(photos, len(clean_views))
    image = Image.new("RGB", (columns * (tile + gap) + gap, count * (tile + gap) + caption + gap), "white")
    draw = ImageDraw.Draw(image)
    draw.text((gap, 0), "clean", fill="black")
    for k, (attack, through) in enumerate(keys):
        draw.text((gap + (1 + 2 * k) * (tile + gap), 0), f"{attack} / {through}", fill="black")
        draw.text((gap + (2 + 2 * k) * (tile + gap), 0), f"difference x{127 / max(eps, 1e-6):.0f}", fill="black")
    for row in range(count):
        y = caption + gap + row * (tile + gap)
        image.paste(Image.fromarray(clean_views[row]), (gap, y))
        for k, key in enumerate(keys):
            cloak = cloaked[key][row]
            image.paste(Image.fromarray(cloak), (gap + (1 + 2 * k) * (tile + gap), y))
            difference = amplified_difference(clean_views[row], cloak, eps)
            image.paste(Image.fromarray(difference), (gap + (2 + 2 * k) * (tile + gap), y))
    return save_png(image, destination)


def platform_markdown(payload: dict) -> str:
    """The platform protocol's report: per (attack, stand-in) and view, protect@1 / hide@5 with counts, rows =
    judging classifiers (surrogates, then evaluation-only), columns = platform profiles; then image quality."""
    results = payload["results"]
    profiles = list(dict.fromkeys(r["profile"] for r in results))
    presets = payload.get("strengths") and payload.get("attacks") or {}
    if presets:
        cloaked = "with the presets " + "; ".join(
            f"`{name}` (surrogates {', '.join(f'`{s}`' for s in value['surrogates'])}, eps {value['eps']:g}/255, "
            f"{value['steps']} steps, {value['draws']} draws/step, working view {value['attack_size']} px, "
            f"{value['loss']} loss, through `{value['through']}`)" for name, value in presets.items())
    else:
        cloaked = (f"through surrogate `{payload['classifier']}`, eps {payload['eps']:g}/255, {payload['steps']} "
                   "steps (FGSM: 1)")
    lines = [
        "# comcloak eval — platform protocol",
        "",
        f"{payload['n_photos']} photos cloaked at full resolution {cloaked}; {payload['seconds']:.0f} s. Each cloak "
        "goes through a platform profile, then an attacker view, then every classifier. **protect@1**: the top-1 "
        "differs from the clean photo's under the same profile and view; **hide@5**: the clean top-1 is not in the "
        "cloak's top 5. *Evaluation-only* classifiers were never attacked through: they stand for models the cloak "
        "has not seen.",
    ]
    for attack, through in dict.fromkeys((r["attack"], r["through"]) for r in results):
        for view in dict.fromkeys(r["view"] for r in results):
            cells = {(r["classifier"], r["profile"]): r for r in results
                     if (r["attack"], r["through"], r["view"]) == (attack, through, view)}
            through_cell = through.replace("|", "\\|")
            lines += ["", f"## {attack} through `{through_cell}`, view `{view}`: protect@1 / hide@5", "",
                      "| classifier | role | " + " | ".join(f"`{p}`" for p in profiles) + " |",
                      "|---|---|" + "---:|" * len(profiles)]
            for name in dict.fromkeys(classifier for classifier, _ in cells):
                row = [cells[name, p] for p in profiles]
                values = [f"{100 * r['protect_at_1']:.0f}% / {100 * r['hide_at_5']:.0f}% "
                          f"({round(r['protect_at_1'] * r['n'])}, {round(r['hide_at_5'] * r['n'])} of {r['n']})"
                          for r in row]
                lines.append(f"| `{name}` | {row[0]['role']} | " + " | ".join(values) + " |")
    quality = payload["quality"]
    lines += ["", f"Quality of the cloaks (full resolution, against the original photo): PSNR mean "
                  f"{quality['psnr_mean']:.2f} dB, 5th percentile {quality['psnr_p05']:.2f} dB; SSIM mean "
                  f"{quality['ssim_mean']:.4f}; max L∞ {quality['linf_max']:.0f}/255; flat-quarter RMS "
                  f"{_optional(quality.get('flat_rms_mean'), 2)}/255."]
    by_attack = payload.get("quality_by_attack") or {}
    if len(by_attack) > 1 or any("cloak_seconds_per_photo" in value for value in by_attack.values()):
        lines += ["", "### Quality per preset", "",
                  "*Flat-quarter RMS*: the change's RMS (0-255, over RGB) on the flattest quarter of each photo's "
                  "pixels (the texture budget's flatness measure), where a pattern is most visible; mean over photos.",
                  "", "| cloaks | PSNR mean (dB) | PSNR 5th pct. (dB) | SSIM mean | flat-quarter RMS | max L∞ | "
                  "cloaking s/photo | steps used (mean, range) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for kind, value in by_attack.items():
            steps = (f"{value['steps_used_mean']:.1f} ({value['steps_used_min']}–{value['steps_used_max']})"
                     if "steps_used_mean" in value else "–")
            lines.append(f"| {kind.replace('|', chr(92) + '|')} | {value['psnr_mean']:.2f} | {value['psnr_p05']:.2f} | "
                         f"{value['ssim_mean']:.4f} | {_optional(value.get('flat_rms_mean'), 2)} | "
                         f"{value['linf_max']:.0f} | {value.get('cloak_seconds_per_photo', float('nan')):.1f} | "
                         f"{steps} |")
    return "\n".join(lines) + "\n"


def _optional(value: float | None, digits: int) -> str:
    """``value`` to ``digits`` decimals, or an en dash when a payload predates it (a report of an older JSON)."""
    return "–" if value is None else f"{value:.{digits}f}"
