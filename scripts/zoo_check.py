#!/usr/bin/env python3
"""Runs the real ``comcloak cloak`` over a folder of arbitrary files (Pillow's ``Tests/images``, a user's archive)
and checks the invariants a run keeps whatever the files are (issue 23, item 2).

Usage: python scripts/zoo_check.py FOLDER [--work DIR] [--strength fast] [--max-rss-mb 3072] [-- COMCLOAK ARGS...]

The run: exit 0 with no failure, 1 with some (never 2 or a crash); no traceback on stdout or stderr; peak RSS (the
child's rusage, and polled from /proc to stop a runaway) under the limit; no stall or timeout; nothing new in the
input folder. Each input file: exactly one record in the ``--report`` JSON (in the manifest when a killed run left no
report); a one-line reason when failed or skipped; no output when failed; the file unchanged. Each output: in the
output folder with the recorded SHA-256; the upright (EXIF-transposed) input's size; channel means over the visible
pixels within ``--mean-levels`` (default the strength's eps + 1) of the input's, both decoded by comcloak's own
decoder (``comcloak.codecs.photos.load_photo``: the
same transpose, colour management, CMYK and 16-bit rules), so only the cloak is measured; the input's alpha kept when
it has transparency (read by Pillow directly, so a decoder that drops it is caught). The output folder holds nothing
else but the manifest and the lock (no part files). Results: ``zoo-check.json`` and ``zoo-check.md`` in ``--work``
(counts, failures and skips by reason, per extension, violations by file, peak RSS, wall time); exit 1 on a violation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # zoo_report beside this script, however it is loaded
from zoo_report import markdown  # noqa: E402

from comcloak.attacks.presets import PRESETS
from comcloak.codecs.decoding import heif_support
from comcloak.codecs.photos import PhotoError, load_photo
from comcloak.engine.manifest import LOCK_NAME, MANIFEST_NAME

STATUSES = ("cloaked", "failed", "skipped")
TRACEBACK = "Traceback (most recent call last)"
POLL_SECONDS = 0.2


@dataclass
class RunResult:
    """The child ``comcloak cloak``: exit status, wall time, peak RSS (MiB) and why it was stopped, if it was."""

    command: list[str]
    exit_code: int | None
    wall_seconds: float
    peak_rss_mb: float
    killed: str | None = None


@dataclass
class Limits:
    """When the run is stopped: peak RSS (MiB), total seconds, seconds without a finished photo."""

    max_rss_mb: float
    timeout_s: float | None
    stall_s: float | None


@dataclass
class Findings:
    """Invariant violations: per input file (its path relative to the folder) and for the run as a whole."""

    by_file: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    run: list[str] = field(default_factory=list)

    def add(self, name: str, problem: str) -> None:
        self.by_file[name].append(problem)


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone between two polls
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def run_comcloak(command: list[str], work: Path, manifest: Path, limits: Limits) -> RunResult:
    """Run ``command`` with stdout/stderr to files in ``work``; stop it past the RSS limit, the timeout, or when the
    manifest has not grown for ``stall_s`` (a hang). Peak RSS comes from the kernel's rusage of this child."""
    started = last_progress = time.monotonic()
    last_size, killed, polled_peak = -1, None, 0.0
    with open(work / "stdout.txt", "wb") as out, open(work / "stderr.txt", "wb") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=work)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            polled_peak = max(polled_peak, _rss_mb(child.pid))
            size = manifest.stat().st_size if manifest.exists() else 0
            if size != last_size:
                last_size, last_progress = size, now
            if killed is None:
                if polled_peak > limits.max_rss_mb:
                    killed = f"peak RSS over {limits.max_rss_mb:g} MiB"
                elif limits.timeout_s and now - started > limits.timeout_s:
                    killed = f"timed out after {limits.timeout_s:g} s"
                elif limits.stall_s and now - last_progress > limits.stall_s:
                    killed = f"no photo finished for {limits.stall_s:g} s (hung)"
                if killed is not None:
                    child.kill()
            time.sleep(POLL_SECONDS)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    peak = max(usage.ru_maxrss / 1024, polled_peak)  # ru_maxrss is in KiB on Linux
    return RunResult(command, child.returncode, time.monotonic() - started, round(peak, 1), killed)


def list_files(folder: Path) -> list[Path]:  # every file, symlinks included, sorted
    return sorted(path for path in folder.rglob("*") if path.is_file() or path.is_symlink())


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        return f"unreadable: {error.strerror or error}"


def load_records(report: Path, manifest: Path) -> tuple[list[dict], str]:
    """The records of the run: the report's, or (a killed run writes none) each source's latest in the manifest."""
    if report.exists():
        return json.loads(report.read_text())["photos"], "report"
    latest: dict[str, dict] = {}
    if manifest.exists():
        for line in manifest.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if isinstance(record, dict) and record.get("status") in STATUSES and "source" in record:
                latest[str(record["source"])] = record
    return list(latest.values()), "manifest"


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path)
    return Path(os.path.abspath(candidate if candidate.is_absolute() else base / candidate))


def match_records(files: list[Path], folder: Path, records: list[dict], base: Path,
                  findings: Findings) -> dict[str, dict]:
    """Each input's one record, by path relative to ``folder``; missing, repeated and foreign records are findings."""
    by_path: dict[Path, list[dict]] = defaultdict(list)
    for record in records:
        by_path[_absolute(str(record.get("source")), base)].append(record)
    matched: dict[str, dict] = {}
    for path in files:
        name = str(path.relative_to(folder))
        found = by_path.pop(Path(os.path.abspath(path)), [])
        if len(found) != 1:
            findings.add(name, "no record" if not found else f"{len(found)} records")
        if found:
            matched[name] = found[-1]
    findings.run += [f"{len(extra)} record(s) for {path}, not an input file" for path, extra in by_path.items()]
    return matched


def reason_of(error: str | None, paths: list[str]) -> str:
    """A failure or skip reason with its file names and numbers taken out, so equal reasons group together."""
    text = error or ""
    for path in sorted(paths, key=len, reverse=True):
        text = text.replace(f"{path}: ", "").replace(path, "<file>")
    text = re.sub(r"(?<![\w<])/[^\s:;,()']+", "<path>", text)
    return re.sub(r"\d+(\.\d+)?", "N", text).strip()[:200]


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of the first frame decoded by Pillow and turned upright by ``ImageOps.exif_transpose`` (after
    the load: Pillow itself applies a TIFF orientation while decoding with libtiff)."""
    from PIL import ImageOps

    with warnings.catch_warnings(action="ignore"), Image.open(path) as image:
        try:
            image.load()
        except OSError:  # e.g. chunks after a PNG's pixels cut short: the header's size stands
            pass
        try:
            return ImageOps.exif_transpose(image).size
        except Exception:  # noqa: BLE001 - a corrupt EXIF block: the decoded size stands
            return image.size


def pillow_alpha(path: Path) -> np.ndarray | None:
    """The input's own alpha, upright, as Pillow gives it (tRNS keys and palette transparency included); None when
    the file has no transparency at all."""
    from PIL import ImageOps

    with warnings.catch_warnings(action="ignore"), Image.open(path) as image:
        if not (image.has_transparency_data or "A" in image.getbands()):
            return None
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - a corrupt EXIF block: the decoded orientation stands, as in upright_size
            upright = image
        alpha = np.asarray(upright.convert("RGBA").getchannel("A"))
    return None if alpha.min() == 255 else alpha


def check_output(source: Path, output: Path, record: dict, mean_levels: float) -> list[str]:
    """What one cloaked output must be: the recorded bytes, the upright input's size, the input's channel means (both
    through comcloak's decoder), its alpha when it had one."""
    problems: list[str] = []
    if record.get("output_sha256") and file_digest(output) != record["output_sha256"]:
        problems.append("output bytes differ from the recorded SHA-256")
    with warnings.catch_warnings(action="ignore"):
        reference, cloaked = load_photo(source), load_photo(output)
    size = upright_size(source)
    got = (cloaked.pixels.shape[1], cloaked.pixels.shape[0])
    if got != size or reference.pixels.shape != cloaked.pixels.shape:
        ref = "x".join(map(str, reference.pixels.shape[1::-1]))
        problems.append(f"output {got[0]}x{got[1]}, upright input {size[0]}x{size[1]} (comcloak decodes {ref})")
    else:
        # Over the visible pixels: the colour under a transparent one is not part of the picture.
        visible = np.ones(reference.pixels.shape[:2], bool) if reference.alpha is None else reference.alpha > 0
        if not visible.any():
            visible[:] = True
        shift = np.abs(reference.pixels[visible].mean(0) - cloaked.pixels[visible].mean(0))
        if shift.max() > mean_levels:
            problems.append(f"channel means moved by {np.round(shift, 1).tolist()} levels (over {mean_levels:g})")
    alpha = pillow_alpha(source)
    if alpha is not None:
        with Image.open(output) as image:
            kept = np.asarray(image.convert("RGBA").getchannel("A")) if image.has_transparency_data else None
        if kept is None or kept.shape != alpha.shape:
            problems.append(f"alpha dropped ({int((alpha == 0).sum())} transparent pixels in the input)")
        elif np.abs(kept.astype(int) - alpha).mean() > 1:
            problems.append(f"alpha changed: {int((alpha == 0).sum())} transparent pixels in, {int((kept == 0).sum())}"
                            " out")
    return problems


def check_files(folder: Path, out: Path, matched: dict[str, dict], base: Path, before: dict[str, str],
                findings: Findings, mean_levels: float) -> None:
    """The per-file invariants; then anything left in the output folder is an output of a failed input or debris."""
    expected = {out / MANIFEST_NAME, out / LOCK_NAME}
    for name, record in matched.items():
        source, status = folder / name, record.get("status")
        if file_digest(source) != before[name]:
            findings.add(name, "input changed by the run")
        if status not in STATUSES:
            findings.add(name, f"unknown status {status!r}")
        elif status != "cloaked":
            if not (record.get("error") or "").strip() or "\n" in record["error"]:
                findings.add(name, f"{status} without a one-line reason")
            continue
        output = _absolute(str(record.get("output")), base) if record.get("output") else None
        if output is None or not output.is_file():
            findings.add(name, "cloaked, but no output file")
            continue
        if out.resolve() not in output.resolve().parents:
            findings.add(name, f"output outside the output folder: {output}")
        expected.add(output)
        try:  # only inputs the run itself decoded and cloaked are decoded here, so none hangs
            problems = check_output(source, output, record, mean_levels)
        except (PhotoError, OSError, ValueError) as error:
            problems = [f"output not checkable: {error}"]
        for problem in problems:
            findings.add(name, problem)
    failed_stems = {str(Path(name).with_suffix("")): name for name, record in matched.items()
                    if record.get("status") != "cloaked"}
    for path in list_files(out):
        if _absolute(str(path), base) in expected:
            continue
        relative = path.relative_to(out)
        owner = failed_stems.get(str(relative.with_suffix("")))
        if owner is not None:
            findings.add(owner, f"{matched[owner]['status']}, but an output was written: {relative}")
        else:
            findings.run.append(f"debris in the output folder: {relative}")


def check_run(run: RunResult, work: Path, statuses: Counter, source: str, findings: Findings) -> None:
    if run.killed:
        findings.run.append(f"run stopped: {run.killed}")
    failed = statuses["failed"] > 0
    if run.exit_code != int(failed):
        findings.run.append(f"exit status {run.exit_code} with {statuses['failed']} failed record(s) (expected "
                            f"{int(failed)})")
    for stream in ("stdout.txt", "stderr.txt"):
        text = (work / stream).read_text(errors="replace")
        if TRACEBACK in text:
            findings.run.append(f"traceback in {stream.split('.')[0]} ({text.count(TRACEBACK)}x)")
    if source != "report":
        findings.run.append("no --report written; records read from the manifest")


def summarize(folder: Path, files: list[Path], matched: dict[str, dict], run: RunResult, findings: Findings,
              records_from: str, limits: Limits) -> dict:
    statuses = Counter(record.get("status") for record in matched.values())
    grouped: dict[str, dict[str, list[str]]] = {status: defaultdict(list) for status in ("failed", "skipped")}
    per_extension: dict[str, Counter] = defaultdict(Counter)
    entries = []
    for path in files:
        name = str(path.relative_to(folder))
        record = matched.get(name, {})
        status = record.get("status", "no record")
        reason = reason_of(record.get("error"), [str(path), str(record.get("source")), str(record.get("output"))]) \
            if status in grouped else None
        if reason is not None:
            grouped[status][reason].append(name)
        per_extension[path.suffix.lower() or "(none)"][status] += 1
        entries.append({"file": name, "status": status, "reason": reason, "error": record.get("error"),
                        "psnr_db": record.get("psnr_db"), "violations": findings.by_file.get(name, [])})
    return {
        "folder": str(folder), "inputs": len(files), "records_from": records_from, "run": asdict(run),
        "limits": asdict(limits),
        "counts": {status: statuses.get(status, 0) for status in STATUSES} | {"no record": len(files) - len(matched)},
        "failed_by_reason": _by_count(grouped["failed"]), "skipped_by_reason": _by_count(grouped["skipped"]),
        "per_extension": {ext: dict(counts) for ext, counts in sorted(per_extension.items())},
        "run_violations": findings.run,
        "file_violations": {name: problems for name, problems in sorted(findings.by_file.items()) if problems},
        "files": entries,
    }


def _by_count(groups: dict[str, list[str]]) -> list[dict]:
    return [{"reason": reason, "count": len(names), "examples": names[:4]}
            for reason, names in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the files to cloak (searched recursively; never written to)")
    parser.add_argument("--work", type=Path, help="outputs, report, logs and results (no out/ in it yet; default: "
                                                  "a new temporary folder)")
    parser.add_argument("--strength", default="fast", help="comcloak's --strength (default fast)")
    parser.add_argument("--max-rss-mb", type=float, default=3072, help="peak RSS allowed (default 3072 MiB)")
    parser.add_argument("--timeout", type=float, help="stop the run after this many seconds")
    parser.add_argument("--stall", type=float, default=900, help="stop the run when no photo has finished for "
                                                                 "this many seconds (default 900)")
    parser.add_argument("--mean-levels", type=float, default=None,
                        help="largest change of a channel's mean over the visible pixels, 0-255 levels (default: the "
                             "strength's eps + 1: a cloak within eps moves a mean by at most eps, the encoder by a "
                             "level more)")
    args, extra = parser.parse_known_args(argv)
    if args.mean_levels is None:
        args.mean_levels = PRESETS[args.strength].eps + 1 if args.strength in PRESETS else 6.0
    if extra and extra[0] == "--":
        extra = extra[1:]
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    heif_support()  # Pillow opens HEIC/HEIF here as comcloak does, when pillow-heif is installed
    folder = args.folder.resolve()
    if not folder.is_dir():
        print(f"zoo_check: {args.folder} is not a folder", file=sys.stderr)
        return 2
    work = (args.work or Path(tempfile.mkdtemp(prefix="zoo-check-"))).resolve()
    out, report = work / "out", work / "report.json"
    if out.exists() or work == folder or folder in work.parents:
        print(f"zoo_check: {work} must be a new folder outside {folder} (it has out/ or is inside)", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    files = list_files(folder)
    before = {str(path.relative_to(folder)): file_digest(path) for path in files}
    command = [sys.executable, "-m", "comcloak", "cloak", str(folder), "-o", str(out), "--strength",
               args.strength, "--report", str(report), "-q", *extra]
    limits = Limits(args.max_rss_mb, args.timeout, args.stall)
    run = run_comcloak(command, work, out / MANIFEST_NAME, limits)
    findings = Findings()
    findings.run += [f"new file in the input folder: {path.relative_to(folder)}"
                     for path in sorted(set(list_files(folder)) - set(files))]
    records, records_from = load_records(report, out / MANIFEST_NAME)
    matched = match_records(files, folder, records, work, findings)
    check_files(folder, out, matched, work, before, findings, args.mean_levels)
    check_run(run, work, Counter(r.get("status") for r in matched.values()), records_from, findings)
    result = summarize(folder, files, matched, run, findings, records_from, limits)
    (work / "zoo-check.json").write_text(json.dumps(result, indent=1) + "\n")
    (work / "zoo-check.md").write_text(markdown(result))
    violations = len(findings.run) + sum(map(len, findings.by_file.values()))
    print(f"zoo_check: {len(files)} inputs, {result['counts']}; exit {run.exit_code}, {run.wall_seconds:.0f} s, peak "
          f"RSS {run.peak_rss_mb:.0f} MiB; {violations} violation(s); results in {work / 'zoo-check.md'}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
