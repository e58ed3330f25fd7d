"""``comcloak serve`` under abuse (issue 23, defects 3, 9, 10 and 13): one real uvicorn server on a loopback port for
the module, real clients (httpx and raw sockets); every wait is bounded."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from serving import FAST, TINY, png_bytes, running_server  # noqa: E402

from comcloak.serve.app import ServeSettings  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES = 2_000_000  # over Starlette's 1 MiB spool, so a multipart upload that rolled over to disk would show
READ_TIMEOUT_S = 1.0
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def server():
    settings = ServeSettings(max_bytes=MAX_BYTES, read_timeout_s=READ_TIMEOUT_S, token=TOKEN, **TINY)
    with running_server(settings) as (base, uvicorn_server):
        yield base, int(base.rsplit(":", 1)[1]), uvicorn_server.config.app


def counts(base: str) -> dict[str, float]:
    """``comcloak_requests_total`` by code."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    prefix = 'comcloak_requests_total{code="'
    return {line[len(prefix):].split('"')[0]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(prefix)}


def exchange(port: int, head: bytes, chunks: list[bytes] = (), wait: float = 6.0) -> tuple[bytes, bool]:
    """Send ``head`` and ``chunks`` from a thread (the server may answer and close before an upload ends) and read
    what the server sends for up to ``wait`` seconds: (the bytes, whether the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        def send() -> None:
            try:
                sock.sendall(head)
                for chunk in chunks:
                    sock.sendall(chunk)
            except OSError:
                pass  # the server stopped the upload

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received, closed, deadline = b"", False, time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:  # reset: the server closed with the rest of the upload unread
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
        sender.join(wait)
    return received, closed


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + [b"0\r\n\r\n"]


def multipart_file(content: bytes, boundary: str = "b0undary") -> bytes:
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
            + content + f"\r\n--{boundary}--\r\n".encode())


def head(content_type: str = "application/octet-stream", framing: str = "Transfer-Encoding: chunked") -> bytes:
    return (f"POST /v1/cloak HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {content_type}\r\n{framing}\r\n\r\n").encode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (its header and an empty image stream: never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_the_body_limit_holds_for_every_request_shape(server, monkeypatch, tmp_path) -> None:
    """Defect 3: chunked multipart without Content-Length was spooled whole (200 for 60 MB under a 1 MB limit)."""
    base, port, _ = server
    over = b"x" * (MAX_BYTES + 1_000_000)
    shapes = {
        "chunked multipart": head("multipart/form-data; boundary=b0undary") + b"".join(chunked(multipart_file(over))),
        "chunked raw": head() + b"".join(chunked(over)),
        "multipart with Content-Length": head("multipart/form-data; boundary=b0undary",
                                              f"Content-Length: {len(multipart_file(over))}") + multipart_file(over),
    }
    for shape, request in shapes.items():
        answer, closed = exchange(port, request[:4096], [request[4096:]])
        assert answer.startswith(b"HTTP/1.1 413"), (shape, answer[:200])
        assert PROBLEM.encode() in answer and b"limit" in answer and closed, shape
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-folder"))  # a spool to disk would fail: 500
    under = httpx.post(f"{base}/v1/cloak", headers=AUTH, files={"file": ("a.png", b"y" * 1_500_000)}, timeout=30)
    assert under.status_code == 400 and "not a readable image" in under.json()["detail"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 10000x10000 header, refused
def test_parser_and_parameter_errors_are_problem_json_and_counted(server) -> None:
    """Defects 9 and 10: target=1000 was a plain-text 500, multipart parser errors plain-text 400s, none counted;
    a 50000x50000 header 400 instead of 413; eps 100 accepted."""
    base, _, _ = server
    before = counts(base)
    cases = [
        ({"params": {**FAST, "target": "1000"}, "content": png_bytes()}, 422, "target must be a class index"),
        ({"params": {**FAST, "eps": "100"}, "content": png_bytes()}, 422, "eps must be in (0, 64]"),
        ({"data": {f"f{i}": "x" for i in range(1500)}, "files": {"file": ("a.png", b"x")}}, 400, "Too many fields"),
        ({"files": [("file", (f"a{i}.png", b"x")) for i in range(1200)]}, 400, "Too many files"),
        ({"data": {"note": "x" * 1_500_000}, "files": {"file": ("a.png", b"x")}}, 400, "Part exceeded"),
        ({"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 400, "boundary"),
        ({"content": png_header(50_000, 50_000)}, 413, "pixels; the limit is 50000000"),
        ({"content": png_header(10_000, 10_000)}, 413, "pixels; the limit is 50000000"),
    ]
    for request, status, detail in cases:
        headers = {**AUTH, **request.pop("headers", {})}
        answer = httpx.post(f"{base}/v1/cloak", headers=headers, timeout=60, **request)
        assert answer.status_code == status and answer.headers["content-type"] == PROBLEM, (detail, answer.text)
        assert detail in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    after = counts(base)
    for code, expected in {"422": 2, "400": 4, "413": 2}.items():
        assert after.get(code, 0) - before.get(code, 0) == expected, (code, before, after)
    for method, path, status in [("GET", "/no-such-path", 404), ("POST", "/v2/health/live", 405)]:
        answer = httpx.request(method, f"{base}{path}", timeout=10)
        assert answer.status_code == status and answer.headers["content-type"] == PROBLEM


def test_an_unexpected_failure_is_a_logged_problem_json_500(server, monkeypatch, caplog) -> None:
    base, _, app = server

    def broken(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service, "view_shape", broken)
    before = counts(base)
    answer = httpx.post(f"{base}/v1/cloak", headers=AUTH, params=FAST, content=png_bytes(), timeout=60)
    assert answer.status_code == 500 and answer.headers["content-type"] == PROBLEM
    assert "a bug" not in answer.text  # logged, never answered
    assert counts(base).get("500", 0) - before.get("500", 0) == 1
    assert any(record.exc_info for record in caplog.records if "failed" in record.getMessage())


def test_slow_clients_are_closed_after_the_read_timeout(server) -> None:
    """Defect 13: sockets sending partial headers or bodies stayed open (all 70 after 20 s)."""
    _, port, _ = server
    partial_headers = b"POST /v1/cloak HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
    partial_body = head(framing="Content-Length: 1000") + b"0123456789"
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda request: exchange(port, request), [partial_headers, partial_body] * 5))
    seconds = time.monotonic() - started
    assert all(closed for _, closed in answers), answers
    assert all(received == b"" for received, _ in answers[0::2])  # headers never ended: closed without an answer
    assert all(received.startswith(b"HTTP/1.1 408") and PROBLEM.encode() in received for received, _ in answers[1::2])
    assert seconds < 5 * READ_TIMEOUT_S
    assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5).status_code == 200


def test_a_client_disconnect_is_one_log_line_and_counted(server, caplog) -> None:
    """Defect 13: each client disconnect logged a full traceback."""
    base, port, _ = server
    caplog.set_level(logging.INFO)
    before = counts(base)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head(framing="Content-Length: 100000") + b"x" * 1000)
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("disconnected" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [record for record in caplog.records if "disconnected" in record.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert not any(record.exc_info for record in caplog.records), [r.getMessage() for r in caplog.records]
    assert counts(base).get("499", 0) - before.get("499", 0) == 1


def test_a_token_guards_v1_and_leaves_health_and_metrics_open(server) -> None:
    """Defect 13: no way to require a token for a non-loopback deployment."""
    base, _, _ = server
    before = counts(base)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = httpx.post(f"{base}/v1/cloak", headers=headers, params=FAST, content=png_bytes(), timeout=30)
        assert answer.status_code == 401 and answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"] == "Bearer" and TOKEN not in answer.text
    assert counts(base).get("401", 0) - before.get("401", 0) == 3
    assert httpx.get(f"{base}/v1/info", timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/info", headers=AUTH, timeout=10).json()["default_strength"] == "balanced"
    assert httpx.post(f"{base}/v1/cloak", headers=AUTH, content=b"junk", timeout=30).status_code == 400  # let in
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read --token-file"),
    ("", "must hold one token"),
    ("two words\n", "must hold one token"),
])
def test_a_bad_token_file_is_one_line_exit_2(tmp_path, capsys, content, message) -> None:
    from comcloak.cli.main import main

    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    code = main(["serve", "--token-file", str(path), "--classifier", "tiny_classifier"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_the_token_file_and_read_timeout_reach_the_settings(tmp_path) -> None:
    from comcloak.cli.main import build_parser
    from comcloak.cli.serve import settings_from_args

    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    args = build_parser().parse_args(["serve", "--token-file", str(path), "--read-timeout", "7"])
    settings = settings_from_args(args)
    assert settings.token == TOKEN and settings.read_timeout_s == 7 and TOKEN not in repr(settings)
