"""An archive through ``comcloak cloak`` in one process and through ``comcloak cloak --ray`` on a local Ray runtime, in
the same run: wall seconds, photos per second (the ratio to the plain run), peak memory of the whole process tree, and
whether the outputs are byte-identical to a plain run with the same torch thread count as each actor.

Each configuration is a real ``comcloak cloak`` subprocess in its own session into a fresh output folder; memory is
the peak of the summed RSS of every process in that session (the driver, Ray's daemons and its actors), sampled every
0.2 s. Rows: ``plain`` (torch's default threads, one per core), ``plain, 1 thread`` (``OMP_NUM_THREADS=1``: the
reference each 1-CPU actor must match byte for byte), and ``--ray`` with each ``--ray-actors`` value asked for.

Usage: python bench/ray_archive.py PHOTOS_DIR [--strength fast] [--actors 1,2] [--limit 8]
                                   [--json bench/results/ray-archive.json] [--markdown bench/results/ray-archive.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from comcloak.atomic import atomic_writer, write_json
from comcloak.engine.throughput import library_versions, machine_description


def session_rss_mb(session: int) -> float:
    """Summed RSS (MB) of the processes in ``session``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # after pid and comm: state, ppid, pgrp, session
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak session RSS (MB) and exit code of ``command``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                               start_new_session=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, session_rss_mb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {stderr.decode()[-2000:]}")
    return time.perf_counter() - started, peak, process.returncode


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith("comcloak")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--strength", default="fast")
    parser.add_argument("--actors", default="1,2", help="--ray-actors values to measure, separated by ';'")
    parser.add_argument("--limit", type=int, default=8, help="photos taken from PHOTOS (sorted)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="comcloak-ray-bench-"))
    try:
        archive = work / "in"
        archive.mkdir()
        photos = sorted(path for path in Path(args.photos).iterdir() if path.is_file())[: args.limit]
        for path in photos:
            shutil.copy2(path, archive / path.name)
        base = [sys.executable, "-m", "comcloak", "cloak", str(archive), "-q", "--strength", args.strength,
                "--batch-size", str(args.batch_size)]
        configs = [("plain", [], {}), ("plain, 1 thread", [], {"OMP_NUM_THREADS": "1"})]
        configs += [(f"--ray --ray-actors {actors}", ["--ray", "--ray-actors", actors], {})
                    for actors in args.actors.split(";")]
        rows = []
        for index, (label, extra, env) in enumerate(configs):
            out = work / f"out{index}"
            seconds, peak, code = timed([*base, "-o", str(out), *extra], {**os.environ, **env})
            rows.append({"config": label, "photos": len(photos), "seconds": seconds,
                         "images_per_s": len(photos) / seconds, "peak_rss_mb": peak, "exit": code,
                         "output_dir": out})
            print(json.dumps({key: value for key, value in rows[-1].items() if key != "output_dir"}))
        reference = outputs(rows[1]["output_dir"])
        for row in rows:
            row["ratio_to_plain"] = row["images_per_s"] / rows[0]["images_per_s"]
            row["identical_to_1_thread"] = outputs(row.pop("output_dir")) == reference
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {"machine": machine_description(), "versions": {**library_versions(), "ray": _ray_version()},
               "strength": args.strength, "batch_size": args.batch_size, "photos": [p.name for p in photos],
               "rows": rows}
    if args.json:
        write_json(payload, args.json)
    table = ["| run | photos | seconds | photos/s | × plain | peak RSS MB (all processes) | outputs = plain 1-thread |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        table.append(f"| {row['config']} | {row['photos']} | {row['seconds']:.1f} | {row['images_per_s']:.3f} | "
                     f"{row['ratio_to_plain']:.2f} | {row['peak_rss_mb']:.0f} | "
                     f"{'byte-identical' if row['identical_to_1_thread'] else 'differ'} |")
    text = (f"Machine: {payload['machine']}  \nVersions: {payload['versions']}  \n"
            f"Workload: --strength {args.strength}, --batch-size {args.batch_size}, {len(photos)} photos from "
            f"{args.photos}\n\n" + "\n".join(table) + "\n")
    print(text)
    if args.markdown:
        with atomic_writer(args.markdown) as handle:
            handle.write(text.encode())


def _ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


if __name__ == "__main__":
    main()
