"""The success rule of a cloak, in one place for the pipeline, both protocols and the parity benchmark."""

from __future__ import annotations

from typing import TypeVar

Labels = TypeVar("Labels")  # an int, a NumPy array or a torch tensor of labels


def attack_succeeded(labels: Labels, goal: Labels, clean: Labels, targeted: bool) -> Labels:
    """Whether a cloak worked, elementwise: targeted, the label is the goal (the target class); untargeted, the label
    differs from the clean photo's label (``goal`` is then the clean label too, and unused).

    Args:
        labels: the classifier's top-1 on the cloak (after whatever codec or view is being judged).
        goal: the attack's goal label: the target when targeted.
        clean: the clean photo's top-1 under the same codec or view.
        targeted: which rule applies.

    Example:
        >>> attack_succeeded(3, goal=3, clean=7, targeted=True), attack_succeeded(3, goal=7, clean=7, targeted=False)
        (True, True)
    """
    return labels == goal if targeted else labels != clean
