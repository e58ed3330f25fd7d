"""Running the ``comcloak`` command in-process for the CLI tests (imported by bare name, as tests/faces/face_photos)."""

from __future__ import annotations

from comcloak.cli.main import main


def run_cli_error(args: list[str], capsys) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``comcloak ARGS``; argparse's own errors exit from inside parse_args."""
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse errors exit from inside parse_args
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
