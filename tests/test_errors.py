"""One user-error base: every one-line error type derives from it, the CLI catches it once, bugs keep a traceback."""

from __future__ import annotations

import argparse

import pytest

from comcloak.attacks import AttackConfigError, ThroughSpecError
from comcloak.cli import main as cli
from comcloak.codecs import CodecSpecError, CodecUnavailableError
from comcloak.codecs.pairs import PairDataError
from comcloak.codecs.photos import PhotoError
from comcloak.engine.backends import BackendUnavailableError
from comcloak.engine.cloaker import CloakerConfigError
from comcloak.engine.outputs import OutputLayoutError
from comcloak.errors import UserError
from comcloak.export import ExportError, OnnxDependencyError, UnsupportedLayerError
from comcloak.models import UnknownModelError, WeightsError

ONE_LINE_ERRORS = (AttackConfigError, ThroughSpecError, CodecSpecError, CodecUnavailableError, PairDataError,
                   BackendUnavailableError, CloakerConfigError, PhotoError, OutputLayoutError, ExportError,
                   OnnxDependencyError, UnsupportedLayerError, UnknownModelError, WeightsError)


@pytest.mark.parametrize("error_type", ONE_LINE_ERRORS, ids=lambda t: t.__name__)
def test_every_one_line_error_is_a_user_error_and_keeps_its_builtin_base(error_type: type) -> None:
    assert issubclass(error_type, UserError)
    assert issubclass(error_type, (ValueError, RuntimeError, ImportError))  # callers catching those still work


def _with_command(monkeypatch, raised: BaseException) -> None:
    """Make `comcloak demo` raise ``raised`` instead of running."""
    original = cli.build_parser

    def fail(args: argparse.Namespace) -> int:
        raise raised

    def build_parser() -> argparse.ArgumentParser:
        parser = original()
        parser._subparsers._group_actions[0].choices["demo"].set_defaults(run=fail)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    _with_command(monkeypatch, CodecSpecError("unknown codec 'jpg:50'\nsecond line"))
    assert cli.main(["demo"]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == "comcloak demo: error: unknown codec 'jpg:50'\n"


@pytest.mark.parametrize("bug", [ValueError("internal"), FileNotFoundError("/tmp/internal-cache-file")])
def test_an_internal_error_is_not_dressed_up_as_a_user_error(monkeypatch, capsys, bug: Exception) -> None:
    _with_command(monkeypatch, bug)
    with pytest.raises(type(bug)):  # uncaught: Python prints the traceback and exits 1
        cli.main(["demo"])
    assert "error:" not in capsys.readouterr().err
