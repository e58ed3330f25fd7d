"""The expectation over transformations' settings (torch-free): one part of the attack configuration
(:class:`comcloak.attacks.config.AttackConfig`'s ``eot``), the distribution ``comcloak.attacks.eot`` draws from."""

from __future__ import annotations

from dataclasses import dataclass

from comcloak.attacks.settings import AttackConfigError, check_declared, setting
from comcloak.defaults import MIN_ATTACK_SIZE


@dataclass(frozen=True)
class EotSettings:
    """The distribution the robust attack averages over at every step (``comcloak.attacks.eot``).

    Attributes:
        draws: random draws per image and step; 0 turns the expectation off (the paper's attack: the stand-in on the
            whole attack view, every step).
        view_size: the attacker's view the draws resample to (S x S), the classifiers' input.
        rescale_range: the attacker's rescaled shorter side over the crop's side, drawn uniformly: 256/224 is the
            torchvision/timm centre crop; the default (1, 300/224) spans tighter and looser crops.
        whole_image_rate: fraction of draws that resize the whole photo to S x S instead of cropping.
        flip_rate: fraction of draws mirrored left-right.
        downscale_rate, downscale_range: fraction of draws downscaled by a platform first, and by what factor.
        through_rate: fraction of draws that go through a stand-in for the platform's codec: the first
            :attr:`coded_draws` of each image's draws at every step (stratified rather than a coin per draw, so a
            fixed graph runs the stand-ins on those draws only).
        bsr_rate: fraction of draws whose attacker view is block-shuffled and rotated (BSR, Wang et al., CVPR 2024,
            a transfer booster): cut into ``bsr_blocks`` x ``bsr_blocks`` blocks, shuffled, each block turned by a
            random multiple of 90 degrees (a pixel permutation; :func:`comcloak.attacks.blocks.block_shuffle_index`);
            0 (the default) draws nothing more, so every cloak is as before.
        bsr_blocks: the BSR grid's side n; ``view_size`` must be a multiple of it (square blocks of equal size).
        sia_rate: fraction of draws whose attacker view gets structure-invariant transforms (SIA, Wang et al., ICCV
            2023): cut into ``sia_blocks`` x ``sia_blocks`` blocks, each flipped, half-turned or rolled at random
            (the paper's transforms that only move pixels: :data:`comcloak.attacks.blocks.SIA_TRANSFORMS`); applied
            before BSR when a draw gets both; 0 (the default) draws nothing more.
        sia_blocks: the SIA grid's side n (any; blocks of at most two sizes).
    """

    draws: int = setting(
        0, "random draws per step of the platform (downscale, codec stand-in) and the attacker's view (rescale, crop, "
           "flip, shift) the loss is averaged over; 0: none, the paper's attack",
        kind="int", low=0, range_text="0 (off) or more", commands=("cloak", "eval", "bench"))
    view_size: int = setting(224, "the attacker's view the draws resample to (S x S)", kind="int", low=MIN_ATTACK_SIZE,
                             range_text=f"at least {MIN_ATTACK_SIZE} pixels (the attacker view's side)")
    rescale_range: tuple[float, float] = setting(
        (1.0, 300 / 224), "the attacker's rescaled shorter side over the crop's side", kind="pair", low=1,
        range_text="increasing and at least 1 (a crop within the photo)")
    whole_image_rate: float = setting(0.25, "fraction of draws resizing the whole photo", kind="real", low=0, high=1)
    flip_rate: float = setting(0.5, "fraction of draws mirrored left-right", kind="real", low=0, high=1)
    downscale_rate: float = setting(0.25, "fraction of draws downscaled first", kind="real", low=0, high=1)
    downscale_range: tuple[float, float] = setting((0.5, 1.0), "the platform's downscale factors", kind="pair",
                                                   low=0, low_open=True, high=1, range_text="within (0, 1]")
    through_rate: float = setting(0.5, "fraction of draws through the codec stand-in", kind="real", low=0, high=1)
    bsr_rate: float = setting(
        0.0, "fraction of draws whose attacker view is cut into blocks, shuffled and each block turned by a multiple "
             "of 90 degrees (block shuffle and rotation, a transfer booster); 0: none", kind="real", low=0, high=1,
        commands=("cloak", "eval", "bench"))
    bsr_blocks: int = setting(2, "the block shuffle's grid side n (n x n blocks; divides view_size)", kind="int",
                              low=1, range_text="1 or more, dividing view_size", commands=("cloak", "eval", "bench"))
    sia_rate: float = setting(
        0.0, "fraction of draws whose attacker view is cut into blocks, each flipped, half-turned or rolled at random "
             "(structure-invariant transforms, a transfer booster); 0: none", kind="real", low=0, high=1,
        commands=("cloak", "eval", "bench"))
    sia_blocks: int = setting(3, "the structure-invariant transforms' grid side n (n x n blocks)", kind="int", low=1,
                              commands=("cloak", "eval", "bench"))

    @property
    def enabled(self) -> bool:
        return self.draws > 0

    @property
    def coded_draws(self) -> int:
        """How many of each step's draws go through a stand-in: ``draws x through_rate``, rounded half up."""
        return int(self.draws * self.through_rate + 0.5)

    @property
    def block_transforms(self) -> bool:
        """Whether some draws move blocks of the view (BSR or SIA): a robust step graph then takes their maps."""
        return self.bsr_rate > 0 or self.sia_rate > 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each field against its declaration (kind and range)."""
        check_declared(self)
        if self.bsr_rate > 0 and self.view_size % self.bsr_blocks:
            raise AttackConfigError(f"bsr_blocks ({self.bsr_blocks}) must divide view_size ({self.view_size}): "
                                    "the block shuffle moves square blocks of one size")
        if self.sia_rate > 0 and self.sia_blocks > self.view_size:
            raise AttackConfigError(f"sia_blocks ({self.sia_blocks}) must be at most view_size ({self.view_size})")
