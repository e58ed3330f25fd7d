"""``comcloak eval PHOTOS``: success rates of cloaks after real codecs, by the paper protocol (docs/DESIGN.md §3)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from comcloak import defaults
from comcloak.attacks.config import declared_settings
from comcloak.attacks.methods import attack_method_names
from comcloak.attacks.presets import STRENGTHS
from comcloak.attacks.views import ATTACKER_VIEWS
from comcloak.cli.evaluate_faces import FACE_JUDGES, add_face_options
from comcloak.cli.options import (
    add_attack_options,
    add_backend_options,
    add_classifier_options,
    add_device_option,
    attack_config_from_args,
    given_settings,
    positive_int,
)
from comcloak.codecs.platforms import PROFILES

DEFAULT_CODECS = "none,jpeg:75,jpeg:50,jpeg:25,webp:75,webp:50,webp:25,jp2:10,jp2:20"
DEFAULT_CHAINS = "none,resize:2048+jpeg:85"  # the archive protocol's default platform chains
DEFAULT_JUDGES = "efficientnet_lite1,efficientnet_lite2"  # evaluation-only: models no cloak attacks through


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure protection after real codecs and platforms (paper, archive, platform or faces protocol)",
        description="Paper protocol: each photo resized to 224x224, clean label = classifier top-1, cloaked, rounded "
                    "to uint8, compressed by the real codec, classified. Archive protocol: each photo cloaked at full "
                    "resolution, passed through a platform chain (--codecs, e.g. resize:2048+jpeg:85), resized and "
                    "centre-cropped as an attacker would (256, 224), classified. Each cloak is computed once and "
                    "scored against every codec. Faces protocol: PHOTOS is a folder of PERSON/ subfolders; each photo "
                    "is face-cloaked, sent through each platform profile and judged by face recognisers (pairs of "
                    "photos of one person and each cloak with its own original; docs/faces.md).")
    parser.add_argument("photos", nargs="+", metavar="PHOTOS", help="photo files or folders")
    parser.add_argument("--protocol", default="paper", choices=("paper", "archive", "platform", "faces"),
                        help="paper (224x224 views, default), archive (full resolution, platform chains, the "
                             "attacker's 256/224 crop), platform (full resolution, platform profiles, attacker "
                             "views, protect@1 and hide@5 on the surrogate and the evaluation-only classifiers) or "
                             "faces (face cloaks, platform profiles, face-recognition matches broken)")
    parser.add_argument("--views", default="crop,resize",
                        help=f"platform protocol: attacker views, comma-separated from {','.join(ATTACKER_VIEWS)} "
                             "(default crop,resize; crop is the judge)")
    parser.add_argument("--judges", default=None,
                        help="platform protocol: evaluation-only classifiers scored beside the surrogate "
                             f"(default {DEFAULT_JUDGES}: pip install 'comcloak[eval]'; 'none' for none); faces "
                             f"protocol: face judges from dlib (evaluation only), sface (the surrogate) (default "
                             f"{FACE_JUDGES})")
    parser.add_argument("--attacks", default=",".join(attack_method_names()),
                        help=f"comma-separated: {','.join(attack_method_names())} (default all)")
    parser.add_argument("--strengths", default=None, metavar="LIST",
                        help=f"platform protocol: cloak with these presets instead of --attacks, comma-separated "
                             f"from {','.join(STRENGTHS)}, each with its own numbers, surrogates and stand-in (as "
                             "comcloak cloak --strength runs them); --eps, --steps, --alpha, --momentum, --draws "
                             "and --seed still apply when given")
    parser.add_argument("--through", default="none,diffjpeg:50,comodel:auto",
                        help="comma-separated stand-ins: none, diffjpeg:Q, comodel:CODEC, comodel:PATH, "
                             "comodel-cubic:CODEC (the ComModel's trained cubic rounding instead of its continuous "
                             "relaxation), 'mix:A|B', 'eot:A|B', comodel:auto (for each codec evaluated, the "
                             "ComModel trained for it: the paper's setting) (default none,diffjpeg:50,comodel:auto)")
    parser.add_argument("--codecs", default=None,
                        help=f"comma-separated real codecs (default: paper {DEFAULT_CODECS}; archive "
                             f"{DEFAULT_CHAINS}; platform: every platform profile, {','.join(PROFILES)})")
    parser.add_argument("--cross", action="store_true",
                        help="also cloak through the stand-in matched to each codec evaluated (comodel:jpeg:50, ...) "
                             "and score every such cloak on every codec: the mismatch matrix")
    parser.add_argument("--limit", type=positive_int, default=None, help="use the first N photos (sorted by path)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE,
                        help=f"photos attacked together (default {defaults.BATCH_SIZE})")
    parser.add_argument("--json", metavar="OUT", help="write results as JSON")
    parser.add_argument("--report", metavar="OUT.md", help="write the tables as markdown")
    parser.add_argument("--plot", metavar="OUT.png", help="write a grouped bar chart of the success rates")
    parser.add_argument("--examples", metavar="OUT.png",
                        help="write an example grid: the first 4 photos, each cloak and its amplified difference")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_attack_options(parser, "eval", "--strengths",
                       overrides={"draws": {"default_text": "each preset's own; applies with --strengths only"}})
    models = add_classifier_options(parser, command="eval")
    parser.set_defaults(classifier=None)  # given or not: --strengths refuses it even when it names the default
    add_device_option(models)
    # The archive and platform protocols cloak through a Cloaker, so they can check any backend; the paper protocol
    # runs the plain attack loop (torch, fp32) and refuses them.
    add_backend_options(models, "archive and platform protocols: ")
    add_face_options(parser)
    parser.set_defaults(run=run)


@dataclass
class EvalPlan:
    """What one ``comcloak eval`` run scores: the parsed options, the judge (None with ``--strengths``: each preset
    loads its own surrogates), the photos read (and those that could not be), the attacks, stand-ins and codecs,
    the attacker views, the device, the number of cloaks (for the progress bar) and when it started."""

    args: argparse.Namespace
    classifier: Any
    photos: list
    failed: list[str]
    names: list[str]  # each photo's file name, for the per-photo figures
    attacks: list
    throughs: dict
    codecs: list
    views: list[str]
    device: Any
    total: int
    started: float


def run(args: argparse.Namespace) -> int:
    from comcloak.cli.evaluate_faces import refuse_face_options, run_faces

    if args.protocol == "faces":
        return run_faces(args)
    refuse_face_options(args)
    plan = make_plan(args)
    if args.protocol == "platform":
        return _run_platform(plan)
    return _run_paper_or_archive(plan)


def check_options(args: argparse.Namespace) -> list[str]:
    """Refuse options that do not fit the protocol; returns the attacker views."""
    from comcloak.errors import UserError

    if args.examples and args.protocol != "paper":
        raise UserError(f"--examples shows 224x224 paper-protocol cloaks; it does not apply to --protocol "
                        f"{args.protocol}")
    if args.protocol == "paper" and (args.backend != defaults.BACKEND or args.precision != defaults.PRECISION):
        raise UserError("--backend and --precision apply to the archive and platform protocols (the paper protocol "
                        "runs the plain torch fp32 loop)")
    if args.protocol == "platform" and (args.plot or args.targeted or args.cross):
        raise UserError("the platform protocol measures untargeted protection as tables (--json, --report); "
                        "--plot, --targeted and --cross apply to the paper and archive protocols")
    views = [view.strip() for view in args.views.split(",") if view.strip()]
    unknown_views = [view for view in views if view not in ATTACKER_VIEWS]
    if args.protocol == "platform" and (unknown_views or not views):
        raise UserError(f"--views takes comma-separated {', '.join(ATTACKER_VIEWS)}, got {args.views!r}")
    if args.strengths is None and args.draws is not None:
        raise UserError("--draws applies with --strengths (the presets' robust attack)")
    if args.strengths is not None:
        if args.protocol != "platform":
            raise UserError("--strengths applies to --protocol platform")
        if args.classifier is not None or args.classifier_weights:
            raise UserError("with --strengths each preset attacks its own surrogates; --classifier and "
                            "--classifier-weights do not apply")
    return views


def read_photos(args: argparse.Namespace) -> tuple[list, list[str], list[str]]:
    """The photos of the PHOTOS arguments (the first ``--limit``), the errors of those that could not be read, and
    the names of those read."""
    from comcloak.codecs.photos import PhotoError, collect_photos, load_photo
    from comcloak.errors import UserError

    photos, failed, names = [], [], []
    for source, relative in collect_photos(args.photos):
        if args.limit is not None and len(photos) >= args.limit:
            break
        try:
            photos.append(load_photo(source).pixels)
            names.append(relative.as_posix())  # unique within the run, unlike a bare file name
        except PhotoError as error:
            failed.append(str(error))
    for message in failed:
        print(f"skipped: {message}", file=sys.stderr)
    if not photos:
        raise UserError(f"no readable photos in {', '.join(args.photos)}")
    return photos, failed, names


def make_plan(args: argparse.Namespace) -> EvalPlan:
    """Check the options, build the attacks (one configuration per attack; the protocols pair each with every
    stand-in, the config's own through being the row's stand-in where a Cloaker runs it), read the photos and load
    the judge."""
    import torch

    from comcloak.attacks import make_through
    from comcloak.attacks.through import AUTO_THROUGH, CodecMatchedThroughs, matched_through_spec
    from comcloak.cli.options import build_classifier
    from comcloak.codecs import parse_codec
    from comcloak.errors import UserError
    from comcloak.evaluation.paper import cloak_passes
    from comcloak.models import freeze

    # --eps as given (None: not given, and a preset keeps its own); every other path takes the declared default.
    given_eps, args.eps = args.eps, declared_settings()["eps"].user_default if args.eps is None else args.eps
    views = check_options(args)
    if args.strengths is None:  # with --strengths each preset names its own surrogates (the JSON's "attacks")
        args.classifier = args.classifier or defaults.CLASSIFIER
    through_specs = [spec.strip() for spec in args.through.split(",") if spec.strip()]
    if args.strengths is not None:
        attacks = strength_configs(args, given_eps)
        through_specs = ["preset"]
    else:
        attacks = [attack_config_from_args(args, method=name.strip(), through=defaults.THROUGH)
                   for name in args.attacks.split(",") if name.strip()]
    codec_list = args.codecs or {"archive": DEFAULT_CHAINS, "platform": ",".join(PROFILES)}.get(args.protocol,
                                                                                                DEFAULT_CODECS)
    codecs = [parse_codec(spec.strip()) for spec in codec_list.split(",") if spec.strip()]
    if args.cross:  # one row per matched stand-in: cloak with codec A's ComModel, score on every codec B
        through_specs += [spec for spec in dict.fromkeys(matched_through_spec(c.spec) for c in codecs)
                          if spec not in through_specs and spec != "none"]
    throughs = {spec: CodecMatchedThroughs(args.seed) if spec.lower() == AUTO_THROUGH else
                PRESET_THROUGH if spec == "preset" else make_through(spec, args.seed) for spec in through_specs}
    if not attacks or not throughs or not codecs:
        raise UserError("--attacks, --through and --codecs each need at least one entry")
    photos, failed, names = read_photos(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # With --strengths each preset's Cloaker loads its own surrogates.
    classifier = freeze(build_classifier(args).to(device)) if args.strengths is None else None
    throughs = {name: module.to(device) if module is not PRESET_THROUGH else module
                for name, module in throughs.items()}
    total = len(photos) * len(attacks) * cloak_passes(throughs, codecs)
    return EvalPlan(args, classifier, photos, failed, names, attacks, throughs, codecs, views, device, total,
                    time.perf_counter())


def cloak_run(plan: EvalPlan, make_cloaker, progress):
    """The :class:`~comcloak.evaluation.archive.CloakRun` of the archive and platform protocols."""
    from comcloak.evaluation.archive import CloakRun

    return CloakRun(plan.photos, plan.attacks, plan.throughs, plan.codecs, make_cloaker, plan.device, progress,
                    plan.args.batch_size)


def _run_paper_or_archive(plan: EvalPlan) -> int:
    """``--protocol paper`` and ``archive``: the success table, JSON, markdown report, bar chart and examples."""
    from tqdm import tqdm

    from comcloak.engine.cloaker import Cloaker
    from comcloak.evaluation.archive import run_archive_protocol
    from comcloak.evaluation.paper import run_paper_protocol
    from comcloak.evaluation.report import markdown_report, write_bar_chart, write_example_grid

    args, classifier = plan.args, plan.classifier
    with tqdm(total=plan.total, unit="cloak", disable=args.quiet, file=sys.stderr, dynamic_ncols=True) as bar:
        if args.protocol == "archive":
            def make_cloaker(config, through):
                return Cloaker(config, classifier=classifier, through=through, **cloaker_runtime(args, plan.device))

            result = run_archive_protocol(classifier, cloak_run(plan, make_cloaker, bar.update))
        else:
            result = run_paper_protocol(classifier, plan.photos, plan.attacks, plan.throughs, plan.codecs,
                                        batch_size=args.batch_size, device=plan.device, progress=bar.update)
    seconds = time.perf_counter() - plan.started
    quality = result.quality()
    print(format_results(result, [c.spec for c in plan.codecs], args))
    print(format_quality(quality, ""))
    payload = {
        "protocol": args.protocol, "classifier": args.classifier, "eps": args.eps,
        "steps": max(a.steps for a in plan.attacks),  # of the iterative attacks; FGSM always takes one
        "targeted": args.targeted, "n_photos": result.n_photos,
        "results": [row.as_dict() for row in result.rows], "quality": quality,
        "clean_agreement": [{"codec": spec, "agreement": agree / result.n_photos, "n": result.n_photos}
                            for spec, agree in result.clean_agreement.items()],
        "failed_photos": plan.failed, "seconds": seconds,
    }
    if args.protocol == "archive":  # full-resolution cloaks: each one's figures, as the platform protocol records
        payload["quality_per_photo"] = result.quality_per_photo(plan.names)
    write_outputs(args, payload, markdown_report)
    if args.plot:
        write_bar_chart(payload, args.plot)
    if args.examples:
        write_example_grid(result.clean_views, result.cloaked, args.eps, args.examples)
    print(f"{result.n_photos} photos, {seconds:.0f} s")
    return 0


def platform_judges(plan: EvalPlan) -> dict:
    """Every surrogate of every attack judges every cloak (a row says whether that cloak attacked it), and so do
    the evaluation-only classifiers no cloak attacks: name -> (module, role)."""
    from comcloak.engine.cloaker import load_classifier
    from comcloak.models import freeze

    args = plan.args
    judges = {args.classifier: (plan.classifier, "surrogate")} if args.strengths is None else {}
    for config in plan.attacks:
        for name in config.classifiers:
            if name not in judges:
                judges[name] = (freeze(load_classifier(name).to(plan.device)), "surrogate")
    for name in (part.strip() for part in (args.judges or DEFAULT_JUDGES).split(",")):
        if name and name != "none" and name not in judges:
            judges[name] = (freeze(load_classifier(name).to(plan.device)), "evaluation")
    return judges


def _run_platform(plan: EvalPlan) -> int:
    """``--protocol platform``: tables per (attack, stand-in), JSON and markdown report."""
    from tqdm import tqdm

    from comcloak.engine.cloaker import Cloaker
    from comcloak.evaluation.platform import format_platform_table, run_platform_protocol
    from comcloak.evaluation.report import platform_markdown

    args, classifier, attacks = plan.args, plan.classifier, plan.attacks
    judges = platform_judges(plan)
    runtime = cloaker_runtime(args, plan.device)

    def make_cloaker(config, through):
        if through is None:  # a preset: the Cloaker builds its own surrogates and stand-in
            return Cloaker(config, **runtime)
        return Cloaker(config, classifier=classifier, through=through, **runtime)

    with tqdm(total=plan.total, unit="cloak", disable=args.quiet, file=sys.stderr, dynamic_ncols=True) as bar:
        result = run_platform_protocol(judges, cloak_run(plan, make_cloaker, bar.update), plan.views)
    seconds = time.perf_counter() - plan.started
    quality = result.quality()
    for attack, through in dict.fromkeys((row.attack, row.through) for row in result.rows):
        print(format_platform_table(result, attack, through))
        print()
    print(format_quality(quality, " (full resolution)"))
    payload = {
        "protocol": "platform", "classifier": args.classifier, "strengths": args.strengths,
        "backend": args.backend, "precision": args.precision, "device": str(plan.device),
        "attacks": {(config.strength or config.method): {
            "eps": config.eps_255, "steps": config.steps, "draws": config.eot.draws, "attack_size": config.attack_size,
            "surrogates": list(config.classifiers), "through": config.through, "loss": config.loss,
        } for config in attacks},
        "judges": {name: role for name, (_, role) in judges.items()}, "views": plan.views,
        "eps": args.eps, "steps": max(a.steps for a in attacks), "targeted": False, "n_photos": result.n_photos,
        "results": [row.as_dict() for row in result.rows], "quality": quality,
        "quality_by_attack": result.quality_by_kind(), "quality_per_photo": result.quality_per_photo(plan.names),
        "unprotected": result.unprotected_per_photo(plan.names), "failed_photos": plan.failed, "seconds": seconds,
    }
    write_outputs(args, payload, platform_markdown)
    print(f"{result.n_photos} photos, {seconds:.0f} s")
    return 0


def cloaker_runtime(args: argparse.Namespace, device) -> dict:
    """Where and how every Cloaker of the archive and platform protocols cloaks: they measure the classifier cloak,
    so faces are not cloaked (``protect="objects"``; the faces protocol measures the face cloak)."""
    return {"device": device, "backend": args.backend, "precision": args.precision, "protect": "objects"}


PRESET_THROUGH = None  # eval --strengths: each preset cloaks through its own stand-in


def strength_configs(args: argparse.Namespace, eps: float | None) -> list:
    """The configurations of ``--strengths``: each preset, with ``eps`` (the --eps given, or None) and every other
    declared attack option given (--steps, --alpha, --momentum, --draws, --seed, ...) applied."""
    from comcloak.attacks.presets import preset_config
    from comcloak.errors import UserError

    names = [name.strip() for name in args.strengths.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRENGTHS]
    if unknown or not names:
        raise UserError(f"--strengths takes comma-separated {', '.join(STRENGTHS)}, got {args.strengths!r}")
    given = {**given_settings(args, "eval", "attack"), "eps": eps}
    return [preset_config(name, **given) for name in names]


def format_quality(quality: dict[str, float], where: str) -> str:
    return (f"quality of the cloaks{where}: PSNR mean {quality['psnr_mean']:.1f} dB (5th percentile "
            f"{quality['psnr_p05']:.1f}), SSIM mean {quality['ssim_mean']:.4f}, "
            f"max L-inf {quality['linf_max']:.0f}/255"
            + (f", flat-quarter RMS {quality['flat_rms_mean']:.2f}/255" if "flat_rms_mean" in quality else ""))


def write_outputs(args: argparse.Namespace, payload: dict, markdown) -> None:
    """``--json`` (the payload) and ``--report`` (``markdown(payload)``), atomically."""
    from comcloak.atomic import atomic_writer, write_json

    if args.json:
        write_json(payload, args.json)
    if args.report:
        with atomic_writer(args.report) as handle:
            handle.write(markdown(payload).encode())


def format_results(result, codec_specs: list[str], args: argparse.Namespace) -> str:
    """Success-rate table: rows attack × through, columns codecs, cells 'percent (successes/n)'."""
    mode = "targeted" if result.targeted else "untargeted"
    header = ["attack", "through", *codec_specs]
    rows = []
    keys = list(dict.fromkeys((row.attack, row.through) for row in result.rows))
    for attack, through in keys:
        cells = []
        for spec in codec_specs:
            row = next(r for r in result.rows if (r.attack, r.through, r.codec) == (attack, through, spec))
            cells.append(f"{100 * row.success_rate:.0f}% ({row.successes}/{row.n})")
        rows.append([attack, through, *cells])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [f"{mode} success, eps {args.eps:g}/255, classifier {args.classifier}, {result.n_photos} photos"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)
