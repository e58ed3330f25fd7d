"""``comcloak serve``'s job API and page routes (issue 27): a real uvicorn server on a loopback port, real HTTP, the
tiny test network. Polls are bounded in time."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from serving import FAST, TINY, ColdService, SlowService, png_bytes, running_server  # noqa: E402

from comcloak.serve.app import ServeSettings  # noqa: E402
from comcloak.serve.batcher import BatchSettings  # noqa: E402
from comcloak.serve.jobs import JobSettings, JobTable  # noqa: E402
from comcloak.serve.problems import RequestError  # noqa: E402
from comcloak.serve.ui import CONTENT_SECURITY_POLICY  # noqa: E402


class SlowColdService(SlowService, ColdService):
    """Each batch held ``seconds`` longer (a busy worker), without the warm-up."""


def wait_done(base: str, url: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = httpx.get(base + url, timeout=30).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {url} did not finish within {seconds} s")


def test_jobs_and_the_page_on_one_server() -> None:
    settings = ServeSettings(**TINY)
    with running_server(settings, ColdService(settings)) as (base, _):
        job_is_queued_run_and_fetched_like_a_cloak(base)
        job_refusals_and_failures_are_problem_json(base)
        page_is_served_with_a_strict_policy(base)
    settings = ServeSettings(ui=False, token="secret", **TINY)
    with running_server(settings, ColdService(settings)) as (base, _):
        off = httpx.get(f"{base}/", timeout=30)
        assert off.status_code == 404 and off.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{base}/page/page.js", timeout=30).status_code == 404
        assert httpx.post(f"{base}/v1/jobs", content=png_bytes(), timeout=30).status_code == 401
        assert httpx.get(f"{base}/v1/jobs/any", timeout=30).status_code == 401  # before saying whether it exists
        created = httpx.post(f"{base}/v1/jobs", params=FAST, content=png_bytes(), timeout=30,
                             headers={"Authorization": "Bearer secret"})
        assert created.status_code == 202


def job_is_queued_run_and_fetched_like_a_cloak(base: str) -> None:
    created = httpx.post(f"{base}/v1/jobs", params={**FAST, "format": "jpeg"}, content=png_bytes(), timeout=60)
    assert created.status_code == 202 and created.headers["location"] == created.json()["url"]
    assert created.json()["status"] in ("queued", "running")
    status = wait_done(base, created.headers["location"])
    assert status["status"] == "done", status
    result = status["result"]
    assert result["content_type"] == "image/jpeg" and "image" not in result and result["check"] == "none"
    assert isinstance(result["protected"], bool) and result["psnr_db"] > 30 and result["cloak_name"]
    answer = httpx.get(base + status["result_url"], timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["x-comcloak-protected"] == str(result["protected"]).lower()
    assert answer.headers["x-comcloak-cloak-label"] == str(result["cloak_label"])
    with Image.open(io.BytesIO(answer.content)) as image:
        assert image.size == (64, 48) and image.format == "JPEG"


def job_refusals_and_failures_are_problem_json(base: str) -> None:
    bad = httpx.post(f"{base}/v1/jobs", content=b"not an image", timeout=60)
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert "not a readable image" in bad.json()["detail"]
    assert httpx.post(f"{base}/v1/jobs", params={"strength": "ultra"}, content=png_bytes(),
                      timeout=60).status_code == 422
    unknown = httpx.get(f"{base}/v1/jobs/nope", timeout=30)
    assert unknown.status_code == 404 and "no job 'nope'" in unknown.json()["detail"]
    assert httpx.get(f"{base}/v1/jobs/nope/result", timeout=30).status_code == 404
    flat = png_bytes(size=(48, 64))  # a readable photo without a face: protect=faces fails it (422)
    created = httpx.post(f"{base}/v1/jobs", params={**FAST, "protect": "faces", "face_steps": "1"},
                         content=flat, timeout=60)
    status = wait_done(base, created.headers["location"])
    assert status["status"] == "failed" and status["problem"]["status"] == 422, status
    failed = httpx.get(base + status["url"] + "/result", timeout=30)
    assert failed.status_code == 422 and "no faces" in failed.json()["detail"]


def test_queue_position_while_the_worker_is_busy() -> None:
    settings = ServeSettings(batch=BatchSettings(max_batch=1, max_delay_s=0.0), **TINY)
    service = SlowColdService(settings)
    service.seconds = 1.0
    with running_server(settings, service) as (base, _):
        objects = {**FAST, "protect": "objects"}  # no face models to load: the worker is busy with the sleep alone
        urls = [httpx.post(f"{base}/v1/jobs", params=objects, content=png_bytes(seed), timeout=60).headers["location"]
                for seed in range(3)]
        time.sleep(0.3)
        states = [httpx.get(base + url, timeout=30).json() for url in urls]
        assert states[0]["status"] == "running", states
        assert [state.get("position") for state in states[1:]] == [0, 1], states
        early = httpx.get(base + urls[2] + "/result", timeout=30)
        assert early.status_code == 409 and "has not finished" in early.json()["detail"]
        assert all(wait_done(base, url, 60)["status"] == "done" for url in urls)


def test_job_table_is_bounded() -> None:
    table = JobTable(max_jobs=2, ttl_s=10)
    first, second = table.add("a", now=0.0), table.add("b", now=0.0)
    with pytest.raises(RequestError) as refused:  # two unfinished jobs: no room
        table.add("c", now=1.0)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    first.finished = 1.0
    third = table.add("c", now=2.0)  # the finished one makes room
    assert len(table) == 2 and {entry.id for entry in table.unfinished()} == {second.id, third.id}
    second.finished = 2.0
    with pytest.raises(RequestError):
        table.get(second.id, now=12.5)  # evicted after its TTL
    assert table.get(third.id, now=12.5) is third
    with pytest.raises(ValueError):
        JobSettings(max_jobs=0)


def page_is_served_with_a_strict_policy(base: str) -> None:
    page = httpx.get(f"{base}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert '<script src="/page/page.js"' in page.text and "<script>" not in page.text  # no inline script
    for path, media_type in (("/page/page.js", "text/javascript"), ("/page/page.css", "text/css"), ("/", "text/html")):
        asset = httpx.get(base + path, timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert "https://" not in asset.text and "http://" not in asset.text  # never a remote resource
    info = httpx.get(f"{base}/v1/info", timeout=30).json()
    assert "facebook" in info["profiles"] and info["formats"][0] == "keep" and info["jobs"]["max_jobs"] == 128


def test_the_page_and_job_options_reach_the_settings() -> None:
    from comcloak.cli.main import build_parser
    from comcloak.cli.serve import settings_from_args

    settings = settings_from_args(build_parser().parse_args(["serve", "--no-ui", "--max-jobs", "3", "--job-ttl", "5"]))
    assert not settings.ui and settings.jobs == JobSettings(max_jobs=3, ttl_s=5)
    assert settings_from_args(build_parser().parse_args(["serve"])).ui
