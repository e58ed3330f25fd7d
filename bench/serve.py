"""Load test of ``comcloak serve``: throughput and p50/p99 latency at 1, 4 and 16 concurrent clients, batched against
``--max-batch 1`` in the same run. Bounded: each level sends ``--requests-per-client`` requests per client and stops
sending after ``--max-seconds``.

Each configuration starts a real uvicorn server on a free loopback port (in this process, its own thread), waits until
it is ready, and is driven by real HTTP clients (httpx, one thread per client). Photos are random ``--size`` squares,
PNG, a different one per request.

Usage: python bench/serve.py [--strength fast] [--clients 1,4,16] [--requests-per-client 2] [--max-seconds 120]
                             [--json bench/results/serve-cpu.json] [--markdown bench/results/serve-cpu.md]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import uvicorn
from PIL import Image

from comcloak.atomic import atomic_writer, write_json
from comcloak.engine.throughput import library_versions, machine_description
from comcloak.serve.app import create_app
from comcloak.serve.batcher import BatchSettings
from comcloak.serve.server import uvicorn_config
from comcloak.serve.service import ServeSettings


def photo(seed: int, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def server(settings: ServeSettings):
    config = uvicorn_config(create_app(settings), settings.read_timeout_s, host="127.0.0.1", port=0,
                            log_level="warning")  # as comcloak serve runs it
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.05)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=600)


def drive(base: str, clients: int, per_client: int, max_seconds: float, strength: str, size: int) -> dict:
    """``clients`` threads each sending ``per_client`` requests back to back; latencies of the 200s."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=max_seconds + 600) as http:
            for n in range(per_client):
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                answer = http.post(f"{base}/v1/cloak", params={"strength": strength},
                                   content=photo(index * 1000 + n, size))
                with lock:
                    codes[str(answer.status_code)] = codes.get(str(answer.status_code), 0) + 1
                    if answer.status_code == 200:
                        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    percentile = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: None)
    return {"clients": clients, "requests": sum(codes.values()), "codes": codes, "seconds": wall,
            "images_per_s": len(latencies) / wall if wall else 0.0, "p50_s": percentile(0.5), "p99_s": percentile(0.99),
            "mean_s": statistics.fmean(latencies) if latencies else None}


def batch_mean(base: str) -> float | None:
    values = {line.split()[0]: float(line.split()[-1]) for line in httpx.get(f"{base}/metrics").text.splitlines()
              if line[:1] != "#"}
    count = values.get("comcloak_batch_size_count", 0)
    return values["comcloak_batch_size_sum"] / count if count else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", default="fast")
    parser.add_argument("--classifier", default=None, help="surrogates (default: the strength's own)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=50.0)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    levels = [int(value) for value in args.clients.split(",")]
    rows = []
    for label, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
        batch = BatchSettings(max_batch=max_batch, max_delay_s=args.max_delay_ms / 1000, max_queue=1024,
                              timeout_s=args.max_seconds + 600)
        settings = ServeSettings(batch=batch, classifier=args.classifier)
        with server(settings) as base:
            for clients in levels:
                row = drive(base, clients, args.requests_per_client, args.max_seconds, args.strength, args.size)
                row.update(mode=label, max_batch=max_batch)
                rows.append(row)
                print(json.dumps(row))
            mean = batch_mean(base)
        for row in rows:
            if row["mode"] == label:
                row["batch_size_mean_all_levels"] = mean
    payload = {"machine": machine_description(), "versions": library_versions(), "strength": args.strength,
               "classifier": args.classifier, "photo_size": args.size, "requests_per_client": args.requests_per_client,
               "max_delay_ms": args.max_delay_ms, "rows": rows}
    if args.json:
        write_json(payload, args.json)
    table = ["| mode | clients | requests | codes | images/s | p50 s | p99 s |", "|---|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        table.append(f"| {row['mode']} (max batch {row['max_batch']}) | {row['clients']} | {row['requests']} | "
                     f"{row['codes']} | {row['images_per_s']:.3f} | {row['p50_s'] or float('nan'):.2f} | "
                     f"{row['p99_s'] or float('nan'):.2f} |")
    text = (f"Machine: {payload['machine']}  \nVersions: {payload['versions']}  \n"
            f"Workload: --strength {args.strength}, {args.size}x{args.size} PNG uploads, "
            f"{args.requests_per_client} requests per client\n\n"
            + "\n".join(table) + "\n")
    print(text)
    if args.markdown:
        with atomic_writer(args.markdown) as handle:
            handle.write(text.encode())


if __name__ == "__main__":
    main()
