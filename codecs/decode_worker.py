"""Untrusted photos are decoded in a separate process, under a per-file budget, so no file can take a run down.

Pillow parses hostile input in C: a file can make it loop, allocate without bound, or crash the interpreter. Each
file's header and pixels are therefore decoded by a small worker process (Pillow and numpy only, no torch), one file
at a time, and the caller waits for its answer at most :attr:`DecodeBudget.seconds`. A worker that runs past that
is killed (no thread is left behind) and the file fails with that reason; a worker limited to
:attr:`DecodeBudget.memory_bytes` of address space beyond its own start-up size that runs out, or one that crashes,
likewise fails only its file. The next file gets a fresh worker. Workers are reused between files (idle ones are
kept, at most two), closed at exit, and exit by themselves when their caller goes away (end of their input).

The messages are pickles written by this module's own worker code, never by the file; the worker runs with the
caller's rights, so reading its answers grants nothing a crafted photo could not already do inside the worker.

Where there is no ``select`` on pipes (Windows) the decode runs in this process, without the time and memory bounds.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DECODE_SECONDS = 60.0  # a 100-megapixel photo decodes in a few seconds; a file past this is stopped
DECODE_MEMORY_BYTES = 4 * 1024**3  # the largest 8-bit image Pillow allows (~179 MP) decodes within this
ISOLATED = os.name == "posix"  # select() works on pipes here
_IDLE_WORKERS_KEPT = 2
_START_SECONDS = 60.0  # for the worker to import Pillow and numpy and say it is ready (not part of a file's time)
_READY = b"R"
_FRAME_HEADER = struct.Struct("<QQ")  # the pickle's byte length, the number of out-of-band buffers after it
_LENGTH = struct.Struct("<Q")
_READ_CHUNK = 1 << 20
_WORKER_CODE = "from comcloak.codecs.decode_worker import serve; serve()"
# The worker needs no thread pools of its own: a single-threaded numpy keeps its start-up size small and steady.
_WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class DecodeFailure(Exception):
    """A file could not be decoded; the message is the one-line reason (without the path)."""


@dataclass(frozen=True)
class DecodeBudget:
    """What decoding one file may take: wall-clock ``seconds`` and ``memory_bytes`` beyond the worker's own size."""

    seconds: float = DECODE_SECONDS
    memory_bytes: int = DECODE_MEMORY_BYTES


DEFAULT_BUDGET = DecodeBudget()


def decode_in_worker(request: tuple, budget: DecodeBudget | None = None) -> Any:
    """``request`` answered by a worker (:func:`comcloak.codecs.decoding.answer_decode_request` there) within
    ``budget`` (default :data:`DEFAULT_BUDGET`); raises :class:`DecodeFailure` with the reason it failed."""
    budget = budget or DEFAULT_BUDGET
    worker = _take_worker()
    try:
        status, value, reusable = worker.call((*request, budget.memory_bytes), budget.seconds)
    except BaseException:
        worker.kill()
        raise
    if reusable:
        _give_back(worker)
    else:
        worker.close()
    if status != "ok":
        raise DecodeFailure(value)
    return value


class _Worker:
    """One decoding process and the pipes to it."""

    def __init__(self) -> None:
        self.owner = os.getpid()  # a forked copy of the caller must not share these pipes
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env={**os.environ, **_WORKER_ENVIRONMENT}, close_fds=True)
        except OSError as error:  # no interpreter to run, or no processes left
            raise DecodeFailure(f"the decoder could not start ({error})") from None
        _widen_pipe(self.process.stdout.fileno())
        try:
            ready = self._read(len(_READY), time.monotonic() + _START_SECONDS, "starting the decoder")
        except DecodeFailure:
            self.kill()
            raise
        if ready != _READY:
            self.kill()
            raise DecodeFailure("the decoder did not start")

    def call(self, request: tuple, seconds: float) -> tuple[str, Any, bool]:
        """Send ``request``; the answer ``(status, value, reusable)``, or DecodeFailure after ``seconds``."""
        try:
            send_message(self.process.stdin, request)
        except OSError:  # it died before reading: say how
            raise DecodeFailure(self._stopped()) from None
        deadline, doing = time.monotonic() + seconds, f"decoding took longer than {seconds:g} s (the per-file limit)"
        return receive_message(lambda length: self._read(length, deadline, doing))

    def _read(self, length: int, deadline: float, doing: str) -> bytearray:
        """``length`` bytes of the worker's answer by ``deadline``, else DecodeFailure: ``doing``; stopped."""
        buffer = bytearray(length)
        view, done, descriptor = memoryview(buffer), 0, self.process.stdout.fileno()
        while done < length:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([descriptor], [], [], remaining)[0]:
                raise DecodeFailure(f"{doing}; stopped")
            count = os.readv(descriptor, [view[done : done + _READ_CHUNK]])
            if count == 0:
                raise DecodeFailure(self._stopped())
            done += count
        return buffer

    def _stopped(self) -> str:
        code = self.process.wait()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"the decoder stopped on {name} (a crash in the image library, or out of memory); not decoded"
        return f"the decoder exited with status {code}; not decoded"

    def kill(self) -> None:
        self.process.kill()
        self.close()

    def close(self) -> None:
        """End the worker: its input closes, so it exits; killed if it does not within a second."""
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _widen_pipe(descriptor: int) -> None:
    """A 1 MiB pipe buffer where Linux allows it (64 KiB by default): a photo's pixels come back in fewer reads."""
    try:
        import fcntl

        fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, _READ_CHUNK)
    except (ImportError, AttributeError, OSError):
        pass


_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _take_worker() -> _Worker:
    with _idle_lock:
        while _idle:
            worker = _idle.pop()
            if worker.owner == os.getpid() and worker.process.poll() is None:
                return worker
    return _Worker()


def _give_back(worker: _Worker) -> None:
    with _idle_lock:
        if len(_idle) < _IDLE_WORKERS_KEPT:
            _idle.append(worker)
            return
    worker.close()


@atexit.register
def close_idle_workers() -> None:
    """Close the workers kept for reuse (at exit; also useful after a fork)."""
    with _idle_lock:
        workers = [worker for worker in _idle if worker.owner == os.getpid()]
        _idle.clear()
    for worker in workers:
        worker.close()


def serve() -> None:
    """The worker's loop: answer each request on standard input until it closes. Runs in the worker process."""
    import resource

    from comcloak.codecs.decoding import answer_decode_request

    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray output of a library can never reach the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; its closing ends this loop
    start_size = _address_space_size()
    answers.write(_READY)
    answers.flush()
    while (request := _read_request(requests)) is not None:
        memory_bytes = request[-1]
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = start_size + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        answer = answer_decode_request(*request)
        if _address_space_size() - start_size > memory_bytes // 4:  # a big decode left a big heap: start afresh
            answer = (*answer[:2], False)
        send_message(answers, answer)
        if not answer[2]:  # after running out of memory the process may be damaged: the caller starts another
            return


def _read_request(stream: Any) -> tuple | None:
    """The next request on ``stream``, None when it has closed (the caller is gone)."""

    def read(length: int) -> bytearray:
        data = bytearray(length)
        view, done = memoryview(data), 0
        while done < length:
            count = stream.readinto(view[done:])
            if not count:
                raise EOFError
            done += count
        return data

    try:
        return receive_message(read)
    except EOFError:
        return None


def send_message(stream: Any, message: Any) -> None:
    """Write ``message`` as a pickle whose large arrays follow it out of band, uncopied (pickle protocol 5)."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    stream.write(_FRAME_HEADER.pack(len(payload), len(raws)))
    for raw in raws:
        stream.write(_LENGTH.pack(raw.nbytes))
    stream.write(payload)
    for raw in raws:
        stream.write(raw)
    stream.flush()


def receive_message(read: Callable[[int], bytearray]) -> Any:
    """The message :func:`send_message` wrote, read through ``read(length)``; its arrays live in the buffers read."""
    length, count = _FRAME_HEADER.unpack(read(_FRAME_HEADER.size))
    sizes = [_LENGTH.unpack(read(_LENGTH.size))[0] for _ in range(count)]
    payload = read(length)
    return pickle.loads(payload, buffers=[read(size) for size in sizes])


def _address_space_size() -> int:
    """This process's virtual memory size in bytes (Linux; elsewhere 1 GiB, a typical start-up size)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1024**3
