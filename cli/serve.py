"""``comcloak serve``: cloak uploads over HTTP (see ``comcloak.serve.app.CloakApp``), on loopback by default."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from comcloak import defaults
from comcloak.cli.options import add_runtime_options, positive_int
from comcloak.serve.server import READ_TIMEOUT_S

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="cloak uploads over HTTP with dynamic batching, health and metrics",
        description="Serve a page for people at / and POST /v1/cloak (the photo's bytes in, the cloaked photo "
                    "out), POST /v1/jobs (the same as a job to poll), GET /v2/health/live, /v2/health/ready, /metrics "
                    "and /v1/info. Requests with the same settings and attack-view shape "
                    "are batched. SIGTERM stops accepting, finishes what is queued and exits 0.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}, "
                                                              "loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--max-batch", type=positive_int, default=8, help="photos per batch at most (default 8)")
    parser.add_argument("--max-delay-ms", type=float, default=50.0,
                        help="how long the oldest request waits for its batch to fill (default 50 ms)")
    parser.add_argument("--max-queue", type=positive_int, default=64,
                        help="requests waiting at most; more get 503 with Retry-After (default 64)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a request may wait and run before a 504 (default 600)")
    parser.add_argument("--max-bytes", type=positive_int, default=50 * 1024 * 1024,
                        help="largest body accepted, bytes; more get 413 (default 50 MiB)")
    parser.add_argument("--max-pixels", type=positive_int, default=50_000_000,
                        help="largest photo accepted, pixels; more get 413 (default 50 million)")
    parser.add_argument("--read-timeout", type=float, default=READ_TIMEOUT_S,
                        help=f"seconds a client has to send a request's headers, and again its body; slower "
                             f"connections are closed, slower bodies get 408 (default {READ_TIMEOUT_S:g})")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="a file holding one bearer token: /v1/* then needs 'Authorization: Bearer <token>' "
                             "(401 otherwise); health and metrics stay open. Use it off loopback")
    parser.add_argument("--check", default=defaults.CHECK_CODEC,
                        help=f"default platform profile the protection header is judged after (default "
                             f"{defaults.CHECK_CODEC}; a request's ?check= wins)")
    parser.add_argument("--classifier", default=None,
                        help="surrogate classifier(s), comma-separated (default: each strength's own)")
    parser.add_argument("--no-ui", action="store_true",
                        help="do not serve the page at / (the API only; / answers 404)")
    parser.add_argument("--max-jobs", type=positive_int, default=128,
                        help="jobs of POST /v1/jobs kept at most, queued, running or finished (default 128)")
    parser.add_argument("--job-ttl", type=float, default=900.0,
                        help="seconds a finished job's result is kept for GET /v1/jobs/ID/result (default 900)")
    add_runtime_options(parser)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace):
    from comcloak.codecs import parse_codec
    from comcloak.errors import UserError
    from comcloak.serve.batcher import BatchSettings
    from comcloak.serve.jobs import JobSettings
    from comcloak.serve.service import ServeSettings

    parse_codec(args.check)
    if not (args.max_delay_ms >= 0 and args.timeout > 0 and args.read_timeout > 0 and args.job_ttl > 0):  # NaN too
        raise UserError("--max-delay-ms must be >= 0, and --timeout, --read-timeout and --job-ttl > 0")
    batch = BatchSettings(max_batch=args.max_batch, max_delay_s=args.max_delay_ms / 1000, max_queue=args.max_queue,
                          timeout_s=args.timeout)
    return ServeSettings(batch=batch, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
                         classifier=args.classifier, backend=args.backend, device=args.device,
                         precision=args.precision, check=args.check, read_timeout_s=args.read_timeout,
                         token=None if args.token_file is None else read_token(args.token_file),
                         jobs=JobSettings(max_jobs=args.max_jobs, ttl_s=args.job_ttl), ui=not args.no_ui)


def read_token(path: Path) -> str:
    """The bearer token of ``--token-file``: one line of printable ASCII without spaces; UserError otherwise."""
    from comcloak.errors import UserError

    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read --token-file {path}: {getattr(error, 'strerror', None) or error}") from None
    if not token or not token.isprintable() or any(character.isspace() for character in token):
        raise UserError(f"--token-file {path} must hold one token: printable ASCII on one line, no spaces")
    return token


def run(args: argparse.Namespace) -> int:
    from comcloak.errors import UserError

    for module in ("uvicorn", "starlette", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{module} is not installed; install comcloak's 'serve' extra: pip install "
                            "'comcloak[serve]'")
    import uvicorn

    from comcloak.serve.app import create_app
    from comcloak.serve.server import uvicorn_config

    settings = settings_from_args(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        import logging

        logging.getLogger(__name__).warning(
            "listening on %s: not loopback; put it behind your own gateway for TLS%s", args.host,
            "" if settings.token else ", and require a token with --token-file")
    _check_address(args.host, args.port)
    config = uvicorn_config(create_app(settings), settings.read_timeout_s, host=args.host, port=args.port,
                            log_level="info", timeout_graceful_shutdown=int(args.timeout))
    server = _graceful_server_class(uvicorn)(config)
    try:
        server.run()
    except OSError as error:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    if not server.started:
        raise UserError(f"the server did not start on {args.host}:{args.port} (see the log above)")
    return 0


def _check_address(host: str, port: int) -> None:
    """Fail with one line before loading any model if the address cannot be listened on (in use, not local)."""
    import socket

    from comcloak.errors import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def _graceful_server_class(uvicorn):
    """uvicorn's Server, except that SIGTERM/SIGINT end it with exit status 0 after the graceful shutdown (uvicorn
    re-raises the signal once done, which makes the exit status -15)."""
    import contextlib
    import signal

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer
