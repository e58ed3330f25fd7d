"""The markdown table of :mod:`zoo_check`'s result (``zoo-check.md``): the run's counts, failures and skips by
reason, the invariant violations and the counts per extension."""

from __future__ import annotations


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: dict) -> str:
    run, counts = result["run"], result["counts"]
    violations = len(result["run_violations"]) + sum(len(v) for v in result["file_violations"].values())
    lines = [f"# zoo check: `{result['folder']}`", "",
             f"`{' '.join(run['command'])}`", "",
             "| inputs | cloaked | failed | skipped | no record | exit | wall s | peak RSS MiB | violations |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {result['inputs']} | {counts['cloaked']} | {counts['failed']} | {counts['skipped']} | "
             f"{counts['no record']} | {run['exit_code']} | {run['wall_seconds']:.0f} | {run['peak_rss_mb']:.0f} | "
             f"{violations} |", ""]
    for title, key in (("Failed, by reason", "failed_by_reason"), ("Skipped, by reason", "skipped_by_reason")):
        lines += [f"## {title}", "", "| count | reason | examples |", "|---|---|---|"]
        lines += [f"| {g['count']} | {_cell(g['reason'])} | {_cell(', '.join(g['examples']))} |" for g in result[key]]
        lines.append("")
    lines += ["## Invariant violations", ""]
    lines += [f"- run: {_cell(problem)}" for problem in result["run_violations"]]
    lines += [f"- `{name}`: {_cell('; '.join(problems))}" for name, problems in result["file_violations"].items()]
    if not violations:
        lines.append("none")
    lines += ["", "## Per extension", "", "| ext | cloaked | failed | skipped | no record |", "|---|---|---|---|---|"]
    lines += [f"| {ext} | {c.get('cloaked', 0)} | {c.get('failed', 0)} | {c.get('skipped', 0)} | "
              f"{c.get('no record', 0)} |" for ext, c in result["per_extension"].items()]
    return "\n".join(lines) + "\n"
