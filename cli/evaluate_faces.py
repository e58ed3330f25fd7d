"""``comcloak eval --protocol faces PHOTOS/``: the face cloak judged by face recognisers after every platform profile.

The options and a thin run over :mod:`comcloak.evaluation.faces`; building the options imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comcloak import defaults
from comcloak.cli.options import given_settings, positive_int
from comcloak.codecs.platforms import PROFILES

FACE_SIDE = 640  # the longer side photos are reduced to before cloaking (as the face measurements in docs/faces.md)
FACE_JUDGES = "dlib,sface"  # dlib: evaluation only; sface: the surrogate the face cloak attacks
FACE_OUTPUTS = {"json": "faces.json", "report": "faces.md", "plot": "faces.png"}  # --out DIR's files
FACE_ONLY = ("face_preset", "face_recogniser", "profiles", "side", "cache", "out")  # the faces protocol's own options
NOT_FOR_FACES = {"strengths": "--strengths", "cross": "--cross", "examples": "--examples", "targeted": "--targeted",
                 "codecs": "--codecs (use --profiles)", "limit": "--limit", "classifier": "--classifier",
                 "classifier_weights": "--classifier-weights"}


def add_face_options(parser: argparse.ArgumentParser) -> None:
    """The ``faces`` protocol's options (``--judges`` is shared with the platform protocol)."""
    group = parser.add_argument_group("faces protocol (PHOTOS: one folder of PERSON/ subfolders, 2+ photos each)")
    group.add_argument("--face-preset", default=None, metavar="PRESET",
                       help="the face cloak's preset (comcloak.attacks.faces; docs/faces.md); default: the default "
                            "face preset. --eps, --steps, --alpha, --momentum, --draws and --seed win over it")
    group.add_argument("--face-recogniser", default=None, metavar="NAMES",
                       help="the surrogate recogniser(s) the cloak attacks, comma-separated for an ensemble "
                            "(e.g. with a recogniser a plugin registers); default: the preset's (sface)")
    group.add_argument("--profiles", default=None, metavar="LIST",
                       help=f"comma-separated platform profiles (default all: {','.join(PROFILES)})")
    group.add_argument("--side", type=positive_int, default=None,
                       help=f"reduce each photo's longer side to this before cloaking (default {FACE_SIDE})")
    group.add_argument("--cache", metavar="DIR", default=None,
                       help="keep the cloaks here (keyed by the photo's pixels, every setting and the cloak's "
                            "code) and reuse them: re-judging does not re-cloak")
    group.add_argument("--out", metavar="DIR", default=None,
                       help="write faces.json, faces.md and faces.png here (--json, --report, --plot win)")


def refuse_face_options(args: argparse.Namespace) -> None:
    """Under the other protocols, the faces protocol's own options are errors rather than silently ignored."""
    from comcloak.errors import UserError

    given = [f"--{name.replace('_', '-')}" for name in FACE_ONLY if getattr(args, name, None) is not None]
    if given:
        raise UserError(f"{', '.join(given)} apply to --protocol faces")


def _names(text: str, known, what: str) -> list[str]:
    from comcloak.errors import UserError

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UserError(f"{what} takes comma-separated {', '.join(known)}, got {text!r}")
    return names


def face_plan(args: argparse.Namespace):
    """Check the options; return (people, config, judge names, profiles)."""
    from comcloak.attacks.faces import DEFAULT_FACE_PRESET, face_config
    from comcloak.attacks.faces.cloak import FACE_BACKENDS
    from comcloak.errors import UserError
    from comcloak.evaluation.faces import FACE_JUDGES as JUDGES
    from comcloak.evaluation.faces import read_people
    from comcloak.models.faces import recogniser_names

    refused = [flag for name, flag in NOT_FOR_FACES.items() if getattr(args, name, None) not in (None, False)]
    # The face loop runs in fp32 on the CPU: the torch loop or the exported face step on ONNX Runtime.
    refused += [flag for flag, given in (("--device", args.device is not None),
                                         ("--precision", args.precision != defaults.PRECISION)) if given]
    if refused:
        raise UserError(f"{', '.join(refused)} do not apply to --protocol faces")
    if args.backend not in FACE_BACKENDS:
        raise UserError(f"--backend {args.backend}: the face cloak runs on {' or '.join(FACE_BACKENDS)}")
    if len(args.photos) != 1:
        raise UserError("--protocol faces reads one folder of PERSON/ subfolders")
    judges = _names(args.judges or FACE_JUDGES, JUDGES, "--judges (faces protocol)")
    profiles = _names(args.profiles or ",".join(PROFILES), PROFILES, "--profiles")
    if args.face_recogniser is not None:
        recogniser_names(args.face_recogniser)  # a bad list fails here, before any photo is read
    overrides = {name: value for name, value in given_settings(args, "eval", "attack").items() if name != "targeted"}
    config = face_config(args.face_preset or DEFAULT_FACE_PRESET, recogniser=args.face_recogniser, **overrides)
    people = read_people(args.photos[0], args.side or FACE_SIDE)
    return people, config, judges, profiles


def run_faces(args: argparse.Namespace) -> int:
    """Cloak, judge and write the outputs (docs/faces.md)."""
    from tqdm import tqdm

    from comcloak.atomic import atomic_writer, write_json
    from comcloak.evaluation.face_cache import CloakCache
    from comcloak.evaluation.face_report import face_markdown, results_table, write_face_chart
    from comcloak.evaluation.faces import FACE_JUDGES as JUDGES
    from comcloak.evaluation.faces import run_face_protocol

    people, config, judge_names, profiles = face_plan(args)
    for message in people.failed:
        print(f"skipped: {message}", file=sys.stderr)
    judges = [JUDGES[name]() for name in judge_names]
    cache = CloakCache(args.cache) if args.cache else None
    with tqdm(total=len(people.photos) + len(profiles), unit="step", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True) as bar:
        result = run_face_protocol(people, config, judges, profiles, cache=cache, progress=bar.update,
                                   backend=args.backend)
    payload = {**result.payload(), "backend": args.backend}
    print("\n".join(results_table(payload)))
    summary = payload["summary"]
    print(f"{summary['photos']} photos, {summary['faces_cloaked']} faces cloaked, {result.seconds:.0f} s")
    outputs = {key: getattr(args, key) or (str(Path(args.out) / name) if args.out else None)
               for key, name in FACE_OUTPUTS.items()}
    if outputs["json"]:
        write_json(payload, outputs["json"])
    if outputs["report"]:
        with atomic_writer(outputs["report"]) as handle:
            handle.write(face_markdown(payload).encode())
    if outputs["plot"]:
        write_face_chart(payload, outputs["plot"])
    return 0
