"""The eval report's markdown: counts, the clean row, and stand-in specs that contain '|'."""

from __future__ import annotations

from comcloak.evaluation.report import markdown_report


def test_markdown_report_escapes_bars_and_shows_counts() -> None:
    payload = {
        "protocol": "paper", "classifier": "tiny", "eps": 5.0, "steps": 10, "targeted": True, "n_photos": 4,
        "results": [{"attack": "mim", "through": "eot:diffjpeg:25|diffjpeg:75", "codec": "jpeg:50",
                     "success_rate": 0.75, "n": 4}],
        "clean_agreement": [{"codec": "jpeg:50", "agreement": 0.5, "n": 4}],
        "quality": {"psnr_mean": 37.0, "psnr_p05": 35.0, "ssim_mean": 0.9, "linf_max": 5.0},
        "failed_photos": ["bad.jpg: not an image"], "seconds": 3.0,
    }
    lines = markdown_report(payload).splitlines()
    row = next(line for line in lines if line.startswith("| mim"))
    assert row == "| mim | `eot:diffjpeg:25\\|diffjpeg:75` | 75% (3/4) |"
    assert "| clean | (no cloak) | 50% (2/4) |" in lines
    assert "- bad.jpg: not an image" in lines
