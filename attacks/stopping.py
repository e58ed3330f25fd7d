"""Per-photo stopping (issue 26, docs/DESIGN.md §2): a photo stops attacking once it has been protected with a margin
on every draw and every surrogate at its last ``stop_after`` steps; the others go on, compacted to a smaller batch.

The rule, shared by the torch loop (:func:`comcloak.attacks.loop.run_attack_result`) and the exported-step runners
(``comcloak.engine.backends.exported``), which compute the same margins on the host from the step graph's per-draw
``logits`` output:

* at step ``s`` the loop classifies every draw of the current iterate ``x_s`` with every surrogate; the photo's
  margin there is the smallest :func:`goal_margins` over those (draw, surrogate) pairs, each on the surrogate's own
  goal column;
* the photo is *safe* at ``s`` when that margin is at least ``stop_margin``; after ``stop_after`` consecutive safe
  steps it stops: its cloak is ``x_s`` (the iterate that was checked, not the one the update would make) and it used
  ``s + 1`` steps (gradients computed; ``x_s`` has ``s`` updates). A photo that never stops used ``steps``.

Example:
    >>> tracker = StopTracker(batch=2, after=2, margin=1.0)
    >>> tracker.check(torch.tensor([3.0, 0.5]), step=0)     # both go on (one safe step so far)
    tensor([False, False])
    >>> tracker.check(torch.tensor([2.0, 4.0]), step=1)     # photo 0: two safe steps in a row
    tensor([ True, False])
    >>> tracker.active, tracker.steps_used
    (tensor([1]), tensor([2, 0]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def goal_margins(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far each row is past its goal, in logits: untargeted ``max_{j != goal} z_j - z_goal`` (positive once the
    clean class is no longer top-1), targeted ``z_goal - max_{j != goal} z_j`` (positive once the target is top-1).

    Args:
        logits: (..., K) float.
        goal: (...) int64, the clean label (untargeted) or the target (targeted) of each row.
        targeted: which of the two margins.

    Returns:
        (...) float, the margins.

    Example:
        >>> goal_margins(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([1]), targeted=False)
        tensor([-1.])
    """
    logits = logits.detach().float()
    at_goal = logits.gather(-1, goal[..., None]).squeeze(-1)
    others = logits.scatter(-1, goal[..., None], float("-inf")).amax(dim=-1)
    return at_goal - others if targeted else others - at_goal


def image_margins(per_view: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Each image's smallest margin over its views and surrogates.

    Args:
        per_view: (N, M, V, K) logits: N images, M surrogates, V views (draws, or the stand-in's copies), K classes.
        goal: (N, M) int64, each surrogate's goal column.
        targeted: as :func:`goal_margins`.

    Returns:
        (N,) float.
    """
    goals = goal[:, :, None].expand(-1, -1, per_view.shape[2])
    return goal_margins(per_view, goals, targeted).flatten(1).amin(dim=1)


@dataclass
class StopTracker:
    """The stopping state of one batch: which images are still attacked, how many safe steps each has in a row, and
    the steps each used.

    Args:
        batch: N, images in the batch.
        after: ``stop_after``, safe steps in a row that stop an image (at least 1).
        margin: ``stop_margin``, the smallest margin that counts as safe.
        device: where the index tensors live.

    Attributes:
        active: (A,) int64, the batch positions of the images still attacked, in batch order.
        steps_used: (N,) int64, the steps each stopped image used (0 while it runs; :meth:`finish` fills the rest).
    """

    batch: int
    after: int
    margin: float
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        if self.after < 1:
            raise ValueError(f"a stop tracker needs stop_after of at least 1, got {self.after}")
        self.active = torch.arange(self.batch, device=self.device)
        self.steps_used = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self._safe_run = torch.zeros(self.batch, dtype=torch.long, device=self.device)

    def check(self, margins: torch.Tensor, step: int) -> torch.Tensor:
        """Record step ``step``'s (0-based) margins of the active images, (A,), and return which of them stop now,
        (A,) bool; :attr:`active` then holds the others only."""
        if margins.shape != self.active.shape:
            raise ValueError(f"expected margins of the {self.active.numel()} active images, got {tuple(margins.shape)}")
        safe = margins.to(self.device) >= self.margin
        run = torch.where(safe, self._safe_run[self.active] + 1, torch.zeros_like(self.active))
        self._safe_run[self.active] = run
        stopping = run >= self.after
        self.steps_used[self.active[stopping]] = step + 1
        self.active = self.active[~stopping]
        return stopping

    def finish(self, steps: int) -> torch.Tensor:
        """The steps each image used, (N,) int64: ``steps`` for those that never stopped."""
        self.steps_used[self.active] = steps
        return self.steps_used


@dataclass(frozen=True)
class AttackResult:
    """What an attack run gives back: the cloaks and the steps each image used.

    Attributes:
        images: (N, 3, H, W) float in [0, 1], the adversarial images.
        steps_used: (N,) int64, gradient steps each image ran (``steps`` unless it stopped early).
    """

    images: torch.Tensor
    steps_used: torch.Tensor

    @classmethod
    def full(cls, images: torch.Tensor, steps: int) -> AttackResult:
        """A run in which every image used all ``steps`` (no stopping)."""
        return cls(images, torch.full((images.shape[0],), steps, dtype=torch.long))
