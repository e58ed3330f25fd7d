"""The perceptual (texture-shaped) L∞ budget: per-pixel factors of eps from the clean photo's local texture.

A flat L∞ budget spends as much change on a smooth sky or skin as on foliage and edges, where the same energy is
masked by the texture (the contrast-masking term of just-noticeable-difference models: Chou & Li 1995, Yang et al.
2005). :func:`local_spread` is the texture measure both cloaks share: the local standard deviation of the luminance
(ITU-R BT.601 luma) over a small window. The face cloak turns it into factors in ``[texture_floor, 1]``
(``comcloak.attacks.faces.budget.texture_map``); the classifier cloak's ``--budget texture`` (:func:`texture_budget`)
smooths it, scales it so the mean factor over the photo is 1 (the mean perceptual cost is the preset's eps) and clips
it to ``[budget_floor, budget_ceiling]``; ``--budget capped`` (:func:`capped_factors`) divides it by an absolute
knee (``budget_knee``) and clips it to ``[budget_floor, 1]``: eps wherever the photo has that much texture, less
where it is flatter (a sky, a wall, skin), never more than eps anywhere. The loop bounds and steps each pixel
by ``eps · factor`` (``attacks/loop.run_attack``); the full-resolution composition bounds each pixel by the same
map computed on the full-resolution photo (window and smoothing scaled with it), so the bound holds at every output
pixel.

:func:`blur` (a separable Gaussian) smooths the map here and the face cloak's gradient (TI).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from comcloak.attacks.config import CAPPED_BUDGET, UNIFORM_BUDGET, AttackConfig

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights: texture is measured on brightness
SCALE_RANGE_LOG2 = (-8.0, 16.0)  # where the bisection looks for the factor scale: 2^-8 .. 2^16 of the mean texture
BISECTION_STEPS = 32  # halves the log2 interval 32 times: the scale to within 24 / 2^32 of an octave
SPREAD_FLOOR = 1e-6  # a photo of one grey level has no texture: its map is the floor everywhere


def luminance(images: torch.Tensor) -> torch.Tensor:
    """The luma (N, 1, H, W) of RGB images (N, 3, H, W) in [0, 1]."""
    weights = torch.tensor(GREY, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images * weights).sum(1, True)


def local_spread(images: torch.Tensor, window: int, separable: bool = False, running: bool = False) -> torch.Tensor:
    """The local standard deviation (N, 1, H, W) of the luma of ``images`` (N, 3, H, W) in [0, 1] over a
    ``window`` x ``window`` box (replicated borders). ``separable`` averages rows then columns (O(window) per pixel)
    instead of the 2-D box (the face cloak's, unchanged); ``running`` averages them by :func:`running_mean` (O(1) per
    pixel: the full-resolution map's windows of tens of pixels; the same figures within float32 rounding).

    Example:
        >>> local_spread(torch.full((1, 3, 8, 8), 0.5), 5).abs().max()
        tensor(0.)
    """
    grey = luminance(images)
    padded = F.pad(grey, (window // 2, (window - 1) // 2, window // 2, (window - 1) // 2), mode="replicate")

    def box(values: torch.Tensor) -> torch.Tensor:
        if running:
            return running_mean(running_mean(values, window, -2), window, -1)
        if separable:
            return F.avg_pool2d(F.avg_pool2d(values, (window, 1), stride=1), (1, window), stride=1)
        return F.avg_pool2d(values, window, stride=1)

    mean = box(padded)
    square = box(padded * padded)
    return (square - mean * mean).clamp_min(0.0).sqrt()


def running_mean(values: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """The mean of each ``window`` consecutive entries of ``values`` along ``dim`` (valid positions only: that
    dimension shrinks by ``window - 1``), from running sums in float64: O(1) per entry whatever the window (the
    full-resolution map's windows are tens of pixels), within float32 rounding of ``avg_pool2d``'s.

    Example:
        >>> running_mean(torch.arange(6.0).view(1, 1, 1, 6), 3, -1)
        tensor([[[[1., 2., 3., 4.]]]])
    """
    sums = values.double().cumsum(dim)
    sums = torch.cat([torch.zeros_like(sums.narrow(dim, 0, 1)), sums], dim)
    count = values.shape[dim] - window + 1
    return ((sums.narrow(dim, window, count) - sums.narrow(dim, 0, count)) / window).to(values.dtype)


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of ``sigma`` pixels, ``2 * ceil(3 sigma) + 1`` taps."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    taps = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` (B, C, H, W) blurred by a separable Gaussian (replicated borders), same shape."""
    kernel = gaussian_kernel(sigma, images.dtype).to(images.device)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), columns, groups=channels)


def fft_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`blur` by products of real FFTs along each axis (replicated borders; the Gaussian is symmetric, so its
    circular convolution over the padded axis is the correlation :func:`blur` computes): the same figures within
    float32 rounding, O(log n) per pixel instead of a kernel of ``6 sigma`` taps. The full-resolution map's smoothing
    (sigma of tens of pixels); not for graphs to export or capture.

    Example:
        >>> ramp = torch.linspace(0, 1, 64).expand(1, 1, 48, 64)
        >>> bool((fft_blur(ramp, 6.0) - blur(ramp, 6.0)).abs().max() < 1e-5)
        True
    """
    kernel = gaussian_kernel(sigma, images.dtype).to(images.device)
    radius = kernel.numel() // 2
    out = images
    for dim, padding in ((-2, (0, 0, radius, radius)), (-1, (radius, radius, 0, 0))):
        padded = F.pad(out, padding, mode="replicate")
        length = padded.shape[dim]
        shape = [1] * padded.dim()
        shape[dim] = -1
        spectrum = torch.fft.rfft(padded, n=length, dim=dim) * torch.fft.rfft(kernel, n=length).view(shape)
        # Output i of the circular convolution is the kernel centred on padded entry i - radius: the image's
        # entries are the outputs 2·radius onwards.
        out = torch.fft.irfft(spectrum, n=length, dim=dim).narrow(dim, 2 * radius, out.shape[dim])
    return out


def unit_mean_factors(texture: torch.Tensor, floor: float, ceiling: float) -> torch.Tensor:
    """``clip(s · texture, floor, ceiling)`` (N, 1, H, W) with the scale ``s`` of each image chosen so its mean is 1
    (or as near as the floor and ceiling allow: a photo flatter than that gets less, one busier gets more).

    The mean is monotone in ``s``, so ``s`` is found by bisection on log2 s with a fixed number of steps: no
    data-dependent control flow, so a CUDA graph can capture it. ``texture`` is non-negative.

    Example:
        >>> unit_mean_factors(torch.rand(2, 1, 16, 16), 0.25, 2.0).mean((1, 2, 3))
        tensor([1.0000, 1.0000])
    """
    relative = texture / texture.mean((1, 2, 3), keepdim=True).clamp_min(SPREAD_FLOOR)
    low = torch.full((texture.shape[0], 1, 1, 1), SCALE_RANGE_LOG2[0], dtype=texture.dtype, device=texture.device)
    high = torch.full_like(low, SCALE_RANGE_LOG2[1])
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        below = (relative * torch.exp2(middle)).clamp(floor, ceiling).mean((1, 2, 3), keepdim=True) < 1.0
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    return (relative * torch.exp2((low + high) / 2)).clamp(floor, ceiling)


def capped_factors(texture: torch.Tensor, knee: float, floor: float) -> torch.Tensor:
    """``clip(texture / knee, floor, 1)`` (N, 1, H, W): 1 (eps) wherever the local spread ``texture`` (non-negative,
    the [0, 1] luma's) reaches ``knee``, in proportion below it, never under ``floor``. The knee is absolute, not
    relative to the photo: a sky is as flat in a photo that is mostly sky as in one that is mostly foliage.

    Example:
        >>> capped_factors(torch.tensor([0.0, 0.005, 0.01, 0.5]).view(1, 1, 2, 2), 0.01, 0.25).flatten().tolist()
        [0.25, 0.5, 1.0, 1.0]
    """
    return (texture / knee).clamp(floor, 1.0)


def texture_budget(images: torch.Tensor, config: AttackConfig, scale: float = 1.0) -> torch.Tensor | None:
    """The classifier cloak's per-pixel factors of eps (N, 1, H, W) for clean images (N, 3, H, W) in [0, 1], or None
    under ``config.budget == "uniform"`` (the loop's scalar eps, unchanged).

    The local luma spread over ``config.budget_window`` pixels, smoothed by a Gaussian of ``config.budget_smoothing``
    pixels; under ``texture`` scaled to a mean factor of 1 and clipped to ``[budget_floor, budget_ceiling]``
    (:func:`unit_mean_factors`), under ``capped`` over ``budget_knee`` and clipped to ``[budget_floor, 1]``
    (:func:`capped_factors`).
    ``scale``: the images' size over the working view's (the full-resolution photo's map: window and smoothing are
    in working-view pixels, so they grow with it and both maps measure the same texture).

    Example:
        >>> factors = texture_budget(x0, preset_config("balanced", budget="texture"))  # < 1 on sky, > 1 on foliage
    """
    if config.budget == UNIFORM_BUDGET:
        return None
    window = max(1, round(config.budget_window * scale))
    # The full-resolution map's windows and Gaussians are tens of pixels: running sums and FFTs (a 4-megapixel photo's
    # map in a fraction of the time); the working view keeps the plain ops a CUDA graph captures.
    full_resolution = scale > 1
    texture = local_spread(images, window, separable=True, running=full_resolution)
    if config.budget_smoothing > 0:
        smooth = fft_blur if full_resolution else blur
        texture = smooth(texture, config.budget_smoothing * scale)
    if config.budget == CAPPED_BUDGET:
        return capped_factors(texture, config.budget_knee, config.budget_floor)
    return unit_mean_factors(texture, config.budget_floor, config.budget_ceiling)


def full_resolution_budget(photos: torch.Tensor, config: AttackConfig) -> torch.Tensor | None:
    """The per-pixel factors of eps (N, 1, H, W) that bound the full-resolution cloak of ``photos`` (N, 3, H, W) in
    [0, 1], or None under the uniform budget: :func:`texture_budget` with window and smoothing scaled by the photos'
    shorter side over their working view's (``config.attack_size``; a smaller photo is its own working view). The
    map the Cloaker composes with, and the one ``comcloak demo`` shows.

    Example:
        >>> full_resolution_budget(photo, preset_config("balanced", budget="texture")).shape   # photo (1, 3, H, W)
        torch.Size([1, 1, H, W])
    """
    shorter = min(photos.shape[-2:])
    return texture_budget(photos, config, shorter / min(shorter, config.attack_size))


def ramp_steps(config: AttackConfig) -> int:
    """The updates over which a growing budget reaches eps: ``config.eps_ramp``, or with 0 all of them (the last
    update, step ``steps - 1``, is the first held to eps; at least 1)."""
    return config.eps_ramp or max(config.steps - 1, 1)


def budget_at(config: AttackConfig, step: int) -> float:
    """The scale of eps (in (0, 1]) the update at ``step`` (0-based) is held to: ``eps_t / eps`` with ``eps_t =
    eps_start + (eps - eps_start) · min(1, step / eps_ramp)`` (:attr:`AttackConfig.eps_start`), the same for every
    photo still attacked; exactly 1.0 without a growing budget and once the ramp is over, so those bounds are the
    constant budget's to the bit.

    Example:
        >>> cfg = attack_config("mim", 8 / 255, steps=5, eps_start=2 / 255)       # eps_ramp 0: over steps 0..4
        >>> [round(budget_at(cfg, t) * 8, 2) for t in range(5)]                    # eps_t on the 0-255 scale
        [2.0, 3.5, 5.0, 6.5, 8.0]
    """
    ramp = ramp_steps(config)
    if not config.ramped or step >= ramp:
        return 1.0
    start = config.eps_start / config.eps
    return start + (1.0 - start) * step / ramp


def budget_used(config: AttackConfig, steps_used: torch.Tensor) -> torch.Tensor:
    """The largest scale of eps each photo's cloak was held to, (N,) float64, from the steps it used, (N,) int
    (:attr:`comcloak.attacks.stopping.AttackResult.steps_used`): :func:`budget_at` of its last step, ``steps_used -
    1`` (a photo that stopped there kept the iterate before that step's update, held to at most this); 1.0 without a
    growing budget.

    Example:
        >>> budget_used(attack_config("mim", 8 / 255, steps=5, eps_start=2 / 255), torch.tensor([1, 3, 5]))
        tensor([0.2500, 0.6250, 1.0000], dtype=torch.float64)
    """
    last = steps_used.detach().cpu().long().clamp_min(1) - 1
    return torch.tensor([budget_at(config, int(step)) for step in last], dtype=torch.float64)
