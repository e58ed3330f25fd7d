"""The one success rule: the same function for ints, NumPy arrays and tensors."""

from __future__ import annotations

import numpy as np
import torch

from comcloak.attacks import attack_succeeded


def test_targeted_means_the_goal_untargeted_means_not_the_clean_label() -> None:
    assert attack_succeeded(3, goal=3, clean=7, targeted=True)
    assert not attack_succeeded(7, goal=3, clean=7, targeted=True)
    assert attack_succeeded(3, goal=7, clean=7, targeted=False)
    assert not attack_succeeded(7, goal=7, clean=7, targeted=False)
    labels, goal, clean = torch.tensor([1, 2, 3]), torch.tensor([1, 5, 5]), torch.tensor([0, 2, 0])
    assert attack_succeeded(labels, goal, clean, True).tolist() == [True, False, False]
    assert attack_succeeded(labels, goal, clean, False).tolist() == [True, False, True]
    assert attack_succeeded(np.array([4, 4]), np.array([4, 1]), np.array([4, 1]), False).tolist() == [False, True]
