"""The outputs of ``comcloak eval --protocol faces``: a markdown report and a grouped bar chart (PNG, Pillow only).

Both read the payload of :meth:`comcloak.evaluation.faces.FaceEvalResult.payload` (what ``--json`` writes), so a
stored JSON can be rendered again.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from comcloak.evaluation.report import PALETTE, draw_legend, draw_percent_grid, save_png

MEASURES = (("pairs", "pairs broken"), ("self", "self broken"))  # (count prefix, label) of each bar per judge


def count_cell(broken: int, judged: int) -> str:
    """``'22/24 (92%)'``; ``'-'`` when nothing was judged."""
    return f"{broken}/{judged} ({100 * broken / judged:.0f}%)" if judged else "-"


def _value(number: float | None, digits: int) -> str:
    return "-" if number is None else f"{number:.{digits}f}"


def results_table(payload: dict) -> list[str]:
    """Markdown rows: one per profile; per judge, pairs broken, self broken and misses (cloaks, pairs)."""
    judges = list(payload["judges"])
    cells = {(row["profile"], row["judge"]): row for row in payload["results"]}
    header = "| profile | " + " | ".join(f"{judge} pairs broken | {judge} self broken | {judge} misses"
                                         for judge in judges) + " |"
    lines = [header, "|---|" + "---:|---:|---:|" * len(judges)]
    for profile in payload["profiles"]:
        values = []
        for judge in judges:
            row = cells[profile, judge]
            values += [count_cell(row["pairs_broken"], row["pairs_judged"]),
                       count_cell(row["self_broken"], row["self_judged"]),
                       f"{row['misses']} ({row['pairs_missed']} pairs)"]
        lines.append(f"| `{profile}` | " + " | ".join(values) + " |")
    return lines


def _describe(payload: dict) -> str:
    settings, summary = payload["settings"], payload["summary"]
    people = len({photo["name"].split("/", 1)[0] for photo in payload["photos"]})
    return (f"{summary['photos']} photos of {people} people (longer side at most {payload.get('side', '?')} px), "
            f"cloaked with the face preset `{settings['preset']}` (eps {settings['eps']:g}/255 on the faces, "
            f"{settings['steps']} steps x {settings['draws']} draws, whole-photo PSNR floor {settings['min_psnr']:g} "
            f"dB, through `{settings['through']}`); {payload['seconds']:.0f} s.")


def face_markdown(payload: dict) -> str:
    """The report: the results per profile and judge, clean misses, quality and time, and one row per photo."""
    summary, roles = payload["summary"], payload["judges"]
    lines = ["# comcloak eval — faces protocol", "", _describe(payload), "",
             "Each cloak goes through a platform profile; each judge then finds the faces with its own detector and "
             "alignment. **pairs broken**: of the pairs of different photos of one person that the judge matches "
             "when both are clean, those it no longer matches with the cloak (the gallery-search threat); **self "
             "broken**: cloaks it no longer matches with their own clean original. **misses**: cloaks in which the "
             "judge no longer finds the face, counted apart and never as broken (rates are broken / judged). "
             "Judges: " + ", ".join(f"`{name}` ({role})" for name, role in roles.items())
             + "; an *evaluation* judge was never attacked through nor used to choose a setting.", ""]
    lines += results_table(payload)
    first = {row["judge"]: row for row in payload["results"] if row["profile"] == payload["profiles"][0]}
    clean = [f"`{name}` {row['clean_misses']}, {row['pairs_clean']} pairs matched when clean"
             for name, row in first.items()]
    lines += ["", "Photos in which a judge finds no face when clean (not judged): " + "; ".join(clean) + "."]
    lines += ["", f"Quality of the {summary['photos_cloaked']} photos with a cloaked face (against the resized "
                  f"original): whole-photo PSNR mean {_value(summary['psnr_mean'], 1)} dB (min "
                  f"{_value(summary['psnr_min'], 1)}), SSIM mean {_value(summary['ssim_mean'], 4)} (min "
                  f"{_value(summary['ssim_min'], 4)}); face-region PSNR mean {_value(summary['region_psnr_mean'], 1)} "
                  f"dB (min {_value(summary['region_psnr_min'], 1)}), SSIM mean "
                  f"{_value(summary['region_ssim_mean'], 4)} (min {_value(summary['region_ssim_min'], 4)}).",
              "", f"Faces found by the cloak's detector: {summary['faces']}; cloaked: {summary['faces_cloaked']}; "
                  f"protected by the surrogate at cloak time (before any platform): "
                  f"{summary['faces_protected_at_cloak_time']}; photos without faces: "
                  f"{summary['photos_without_faces']} (never reported protected). Seconds per face: mean "
                  f"{_value(summary['seconds_per_face'], 1)} (max {_value(summary['seconds_per_face_max'], 1)}); "
                  f"{summary['photos_from_cache']} cloaks read from the cache (their seconds are those stored).",
              "", "| photo | status | faces | PSNR (dB) | SSIM | face-region PSNR (dB) | face-region SSIM "
                  "| s per face |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for photo in payload["photos"]:
        seconds = [face["seconds"] for face in photo["faces"] if face["region"] is not None]
        lines.append(f"| {photo['name']} | {photo['status']} | {len(photo['faces'])} | {photo['psnr']:.1f} | "
                     f"{photo['ssim']:.4f} | {_value(photo['region_psnr'], 1)} | {_value(photo['region_ssim'], 4)} | "
                     f"{_value(sum(seconds) / len(seconds) if seconds else None, 1)} |")
    failed = payload.get("failed_photos") or []
    if failed:
        lines += ["", f"Skipped {len(failed)} photo(s) that did not load:"] + [f"- {message}" for message in failed]
    return "\n".join(lines) + "\n"


def write_face_chart(payload: dict, destination: str | Path, width: int = 1200, height: int = 520) -> Path:
    """Grouped bars: one group per profile, per judge one bar for pairs broken and one for self broken (0-100 %),
    each labelled with its percentage; a legend below. Written atomically as PNG."""
    judges, profiles = list(payload["judges"]), payload["profiles"]
    cells = {(row["profile"], row["judge"]): row for row in payload["results"]}
    series = [(judge, prefix, label) for judge in judges for prefix, label in MEASURES]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, 16, 44, height - 100
    draw.text((left, 12), f"faces protocol: matches broken after each platform - preset "
                          f"{payload['settings']['preset']}, {payload['summary']['photos']} photos "
                          "(misses counted apart, not as broken)", fill="black")
    draw_percent_grid(draw, left, width - right, top, bottom)
    group_width = (width - left - right) / max(len(profiles), 1)
    bar_width = max(2.0, (group_width - 16) / max(len(series), 1))
    for g, profile in enumerate(profiles):
        x0 = left + g * group_width + 8
        for s, (judge, prefix, _) in enumerate(series):
            row = cells.get((profile, judge))
            judged = row[f"{prefix}_judged"] if row else 0
            x = x0 + s * bar_width
            if not judged:
                draw.text((x + 1, bottom - 14), "n/a", fill="black")
                continue
            rate = row[f"{prefix}_broken"] / judged
            y = bottom - (bottom - top) * rate
            draw.rectangle([x, y, x + bar_width - 2, bottom], fill=PALETTE[s % len(PALETTE)])
            draw.text((x + 1, y - 12), f"{100 * rate:.0f}", fill="black")
        draw.text((x0, bottom + 6), profile, fill="black")
    draw.line([(left, bottom), (width - right, bottom)], fill="black")
    draw_legend(draw, [f"{judge} ({payload['judges'][judge]}): {label}" for judge, _, label in series], left,
                bottom + 32, 2, 280)
    return save_png(image, destination)
