"""How an archive run writes and judges its outputs: one :class:`ArchiveOptions`, from ``comcloak cloak``'s output
options (or :func:`comcloak.engine.scale.cloak_dataset`'s ``options``) down to the pipeline, and the settings hash
input of :func:`archive_settings`. Torch-free.

Example:
    >>> options = ArchiveOptions(check="none", output_format="png", batch_size=4)
    >>> options.overwrite
    False
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from comcloak import defaults
from comcloak.attacks.config import CAPPED_BUDGET, UNIFORM_BUDGET, WORKING_LABEL_VIEW
from comcloak.codecs.photos import DEFAULT_WRITE, WriteOptions
from comcloak.engine.outputs import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS
from comcloak.errors import UserError


@dataclass(frozen=True)
class ArchiveOptions:
    """The output options of an archive run (the output folder itself is passed beside them).

    Args:
        check: platform profile or codec chain each cloak is judged after (``--check``; ``none`` for no codec).
        output_format: ``keep`` (each input's format family), ``jpeg``, ``png`` or ``webp`` (``--format``).
        write: JPEG quality and metadata policy of the outputs (``--jpeg-quality``, ``--metadata``).
        batch_size: photos attacked together (``--batch-size``).
        overwrite: redo every photo, done or not, and replace existing outputs (``--overwrite``).
        wait: wait for another run holding the output folder instead of failing (``--wait``).
    """

    check: str = defaults.CHECK_CODEC
    output_format: str = DEFAULT_OUTPUT_FORMAT
    write: WriteOptions = DEFAULT_WRITE
    batch_size: int = defaults.BATCH_SIZE
    overwrite: bool = False
    wait: bool = False

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {self.output_format!r}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")

    def settings(self, cloaker: Any) -> dict[str, Any]:
        """:func:`archive_settings` of ``cloaker`` (a ``Cloaker`` or a ``CloakerSpec``: its config, precision and
        ``protection_settings()``, the protect mode and face cloak) with these options: what the manifest hashes into
        each record."""
        protection = getattr(cloaker, "protection_settings", None)
        return archive_settings(cloaker.config, self.output_format, self.write, cloaker.precision,
                                protection() if protection is not None else None)


DEFAULT_ARCHIVE = ArchiveOptions()  # comcloak cloak's defaults


def archive_settings(config: Any, output_format: str, write: WriteOptions, precision: str,
                     protection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that changes an output file, hashed into each manifest record: the attack as run (an
    :class:`~comcloak.attacks.AttackConfig`), the output encoding, the numeric precision (not the backend, device,
    batch size or runner, which give the same cloaks) and ``protection`` (``engine.protection.protection_settings``:
    empty for ``--protect objects``, else the protect mode and the face cloak as run). One definition for ``comcloak
    cloak`` and Ray runs, so either resumes the other's folder; its keys and values must not change, or finished
    folders would be redone: an objects-only run adds no key, so its hash is the one from before faces existed, and
    the uniform budget adds none of the budget's settings (a shaped one not the other's knob: the texture budget's
    hash is the one from before the capped budget existed) and draws without block transforms none of theirs (they
    change nothing then), nor per-photo stopping when off (``stop_after`` 0), nor the growing budget's settings
    without ``eps_start``, so those hashes are the ones from before the budget, the block draws, stopping and the
    growing budget existed, nor the working view's label (``label_view`` ``attack``), nor the sign step
    (``step_rule`` ``sign``)."""
    from comcloak import __version__

    hashed = asdict(config)
    if hashed.get("budget") == UNIFORM_BUDGET:
        hashed = {name: value for name, value in hashed.items() if not name.startswith("budget")}
    unused = "budget_ceiling" if hashed.get("budget") == CAPPED_BUDGET else "budget_knee"  # the other's knob
    hashed.pop(unused, None)
    if hashed.get("stop_after") == 0:  # per-photo stopping off: every photo runs every step, as before it existed
        hashed = {name: value for name, value in hashed.items() if not name.startswith("stop_")}
    if hashed.get("eps_start", 0) is None:  # no growing budget: eps at every step, as before it existed
        hashed = {name: value for name, value in hashed.items() if name not in ("eps_start", "eps_ramp")}
    if hashed.get("label_view") == WORKING_LABEL_VIEW:  # the working view's label, as before the choice existed
        del hashed["label_view"]
    if hashed.get("step_rule") == defaults.SIGN_STEP:  # the sign step, as before the step rule existed
        del hashed["step_rule"]
    eot = hashed.get("eot")
    if isinstance(eot, dict):
        for kind in ("bsr", "sia"):  # EotSettings' block transforms: off at rate 0
            if eot.get(f"{kind}_rate") == 0:
                eot = {name: value for name, value in eot.items() if not name.startswith(f"{kind}_")}
        hashed["eot"] = eot
    return {"config": hashed, "format": output_format, "jpeg_quality": write.jpeg_quality,
            "metadata": write.metadata, "precision": precision, "comcloak": __version__, **(protection or {})}
