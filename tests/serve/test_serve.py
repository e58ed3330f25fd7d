"""``comcloak serve`` (issue 15): a real uvicorn server on a loopback port, real HTTP clients, the tiny test network.
Request loops are bounded in count and time."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from serving import FAST, TINY, SlowService, png_bytes, running_server  # noqa: E402

from comcloak.serve.app import CloakService, ServeSettings  # noqa: E402
from comcloak.serve.batcher import BatchSettings  # noqa: E402


def test_ready_live_info_and_one_cloak(capsys) -> None:
    with running_server(ServeSettings(**TINY)) as (base, _):
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
        info = httpx.get(f"{base}/v1/info").json()
        assert info["default_strength"] == "balanced" and "strong" in info["presets"]
        answer = httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(), timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(answer.content)) as image:
            assert image.size == (64, 48)
        assert answer.headers["x-comcloak-protected"] in ("true", "false")
        assert float(answer.headers["x-comcloak-psnr"]) > 30 and int(answer.headers["x-comcloak-clean-label"]) >= 0
        as_json = httpx.post(f"{base}/v1/cloak", params={**FAST, "response": "json", "format": "jpeg"},
                             content=png_bytes(), timeout=60).json()
        assert as_json["content_type"] == "image/jpeg" and base64.b64decode(as_json["image"])[:2] == b"\xff\xd8"
        multipart = httpx.post(f"{base}/v1/cloak", params=FAST, files={"file": ("a.png", png_bytes(1))}, timeout=60)
        assert multipart.status_code == 200 and multipart.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("params", "body", "status", "detail"), [
    ({}, b"not an image", 400, "not a readable image"),
    ({}, b"", 400, "the body is empty"),
    ({"strength": "ultra"}, None, 422, "strength must be one of"),
    ({"eps": "999"}, None, 422, "eps"),
    ({"format": "gif"}, None, 422, "format must be one of"),
    ({"check": "jpeg:500"}, None, 422, "quality"),
    ({"colour": "red"}, None, 422, "unknown parameter 'colour'"),
])
def test_errors_are_problem_json_with_one_line(params, body, status, detail) -> None:
    with running_server(ServeSettings(**TINY)) as (base, _):
        answer = httpx.post(f"{base}/v1/cloak", params=params, content=png_bytes() if body is None else body,
                            timeout=60)
    assert answer.status_code == status and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status and detail in problem["detail"] and "\n" not in problem["detail"]


def test_too_large_is_413_by_bytes_and_by_pixels() -> None:
    with running_server(ServeSettings(max_bytes=2000, **TINY)) as (base, _):
        assert httpx.post(f"{base}/v1/cloak", content=png_bytes(), timeout=60).status_code == 413
    with running_server(ServeSettings(max_pixels=1000, **TINY)) as (base, _):
        answer = httpx.post(f"{base}/v1/cloak", content=png_bytes(), timeout=60)
        assert answer.status_code == 413 and "3072 pixels" in answer.json()["detail"]


def test_eight_concurrent_requests_are_batched_and_metrics_say_so() -> None:
    settings = ServeSettings(batch=BatchSettings(max_batch=8, max_delay_s=0.5), **TINY)
    with running_server(settings) as (base, _):
        def one(seed: int) -> int:
            return httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(seed), timeout=120).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(8)))
        metrics = httpx.get(f"{base}/metrics").text
    assert codes == [200] * 8
    values = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines() if line[:1] != "#"}
    count, total = values["comcloak_batch_size_count"], values["comcloak_batch_size_sum"]
    assert total == 8 and total / count > 1.5
    assert 'comcloak_requests_total{code="200"} 8.0' in metrics and "comcloak_queue_depth 0.0" in metrics


def test_full_queue_is_503_with_retry_after_and_a_timeout_is_504() -> None:
    settings = ServeSettings(batch=BatchSettings(max_batch=1, max_delay_s=0, max_queue=1, timeout_s=30), **TINY)
    service = SlowService(settings)
    with running_server(settings, service) as (base, _):
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(httpx.post, f"{base}/v1/cloak", params=FAST, content=png_bytes(0), timeout=60)
            time.sleep(0.3)  # the first is running
            second = pool.submit(httpx.post, f"{base}/v1/cloak", params=FAST, content=png_bytes(1), timeout=60)
            time.sleep(0.3)  # the second waits: the queue is full
            third = httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(2), timeout=60)
            assert third.status_code == 503 and third.headers["retry-after"] == "1"
            assert first.result().status_code == 200 and second.result().status_code == 200
    quick = ServeSettings(batch=BatchSettings(max_batch=1, max_delay_s=0, timeout_s=0.3), **TINY)
    with running_server(quick, SlowService(quick)) as (base, _):
        answer = httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(), timeout=60)
        assert answer.status_code == 504 and "no result within 0.3 s" in answer.json()["detail"]


def test_shutdown_while_busy_finishes_the_request() -> None:
    settings = ServeSettings(**TINY)
    with running_server(settings, SlowService(settings)) as (base, server):
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(httpx.post, f"{base}/v1/cloak", params=FAST, content=png_bytes(), timeout=60)
            time.sleep(0.3)
            server.should_exit = True  # what SIGTERM does
            answer = busy.result()
    assert answer.status_code == 200 and answer.content[:4] == b"\x89PNG"


def test_the_command_serves_on_loopback_and_exits_0_on_sigterm(tmp_path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "comcloak", "serve", "--port", str(port), "--classifier",
                                "tiny_classifier", "--check", "none"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.2)
        answer = httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(), timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert httpx.post(f"{base}/v1/cloak", content=b"junk", timeout=60).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0


def test_a_port_in_use_is_one_line_exit_2(capsys) -> None:
    import socket

    from comcloak.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--classifier", "tiny_classifier"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


class FailsOnBlack(CloakService):
    """The real service, whose Cloaker raises on an all-black photo: one that decodes but fails inside the attack."""

    def cloaker(self, request):
        real = super().cloaker(request)

        class Fussy:
            config, surrogates, device = real.config, real.surrogates, real.device
            protection, faces = real.protection, real.faces  # what the pipeline reads of a Cloaker (--protect)

            def cloak_photos(self, photos, batch_size):
                if any(not photo.any() for photo in photos):
                    raise RuntimeError("this attack cannot handle black")
                return real.cloak_photos(photos, batch_size=batch_size)

            def predict(self, images):
                return real.predict(images)

        return Fussy()


def test_a_bad_photo_inside_a_batch_fails_alone_and_tiny_photos_are_refused() -> None:
    settings = ServeSettings(batch=BatchSettings(max_batch=4, max_delay_s=0.5), **TINY)
    black = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(black, "PNG")
    with running_server(settings, FailsOnBlack(settings)) as (base, _):
        bodies = [png_bytes(0), black.getvalue(), png_bytes(1), png_bytes(2)]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda body: httpx.post(f"{base}/v1/cloak", params=FAST, content=body,
                                                            timeout=120), bodies))
        metrics = httpx.get(f"{base}/metrics").text
        tiny = httpx.post(f"{base}/v1/cloak", content=png_bytes(3, size=(20, 40)), timeout=60)
    assert [answer.status_code for answer in answers] == [200, 500, 200, 200]
    assert "cannot handle black" in answers[1].json()["detail"]
    assert "comcloak_batch_size_sum 4.0" in metrics  # the four were one batch
    assert tiny.status_code == 400 and "too small to cloak (40x20" in tiny.json()["detail"]
