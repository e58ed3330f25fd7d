"""The attack loop: configuration rules, the input gradient against finite differences, and the loop's guarantees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comcloak.attacks import AttackConfigError, attack_config, attack_method_names, paper_targets, run_attack
from comcloak.attacks.loop import descent_gradient
from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.models import create_model

EPS = 8 / 255


def loop_loss_and_gradient(classifier, through, x, labels):
    """The loop's own gradient path (descent_gradient) for the untargeted cross-entropy: it descends minus the
    cross-entropy, so both are negated back to the cross-entropy's (exact)."""
    loss, gradient = descent_gradient([classifier], through, x, labels[:, None], attack_config("bim", EPS))
    return -loss, -gradient, None


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    smooth = F.interpolate(torch.rand(4, 3, 8, 8, generator=generator), size=(48, 48), mode="bilinear")
    return (smooth + 0.05 * torch.rand(4, 3, 48, 48, generator=generator)).clamp(0, 1)


def test_presets_follow_the_paper() -> None:
    fgsm = attack_config("fgsm", EPS)
    assert (fgsm.steps, fgsm.alpha, fgsm.momentum) == (1, EPS, 0.0)
    bim = attack_config("bim", EPS)
    assert (bim.steps, bim.momentum) == (10, 0.0) and bim.alpha == pytest.approx(EPS / 10)
    mim = attack_config("MIM", EPS, targeted=True)
    assert (mim.method, mim.steps, mim.momentum, mim.targeted) == ("mim", 10, 1.0, True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pgd", "eps": EPS}, "unknown attack 'pgd'; available: fgsm, bim, mim"),
        ({"method": "mim", "eps": 0.0}, "eps must be in (0, 1]"),
        ({"method": "mim", "eps": 2.0}, "eps must be in (0, 1]"),
        ({"method": "fgsm", "eps": EPS, "steps": 10}, "fgsm takes exactly one step"),
        ({"method": "bim", "eps": EPS, "momentum": 0.5}, "bim has no momentum"),
        ({"method": "mim", "eps": EPS, "steps": 0}, "steps must be at least 1"),
        ({"method": "mim", "eps": EPS, "momentum": -1.0}, "momentum must be in"),
        ({"method": "mim", "eps": EPS, "momentum": float("nan")}, "momentum must be a finite number, got nan"),
        ({"method": "mim", "eps": EPS, "momentum": float("inf")}, "momentum must be a finite number, got inf"),
        ({"method": "mim", "eps": EPS, "steps": 2.5}, "steps must be an integer"),
    ],
)
def test_bad_configurations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(AttackConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        attack_config(**kwargs)


def test_paper_target_rule() -> None:
    assert paper_targets(torch.tensor([0, 499, 500, 999])).tolist() == [500, 999, 0, 499]


def test_gradient_matches_finite_differences(classifier: torch.nn.Module, images: torch.Tensor) -> None:
    """The loop's input gradient against central differences in float64, through identity and diff-JPEG."""
    model = create_model("tiny_classifier").double().eval()
    model.load_state_dict(classifier.state_dict())
    x = images[:2].double()
    labels = torch.tensor([3, 7])
    for through in (torch.nn.Identity(), DiffJPEG(50).double()):
        _, gradient, _ = loop_loss_and_gradient(model, through, x, labels)
        generator = torch.Generator().manual_seed(2)
        flat = torch.randint(x.numel(), (12,), generator=generator)
        step = 1e-6
        for index in flat.tolist():
            offset = torch.zeros(x.numel(), dtype=torch.float64)
            offset[index] = step
            offset = offset.view_as(x)
            with torch.no_grad():
                up = F.cross_entropy(model(through(x + offset)), labels, reduction="sum")
                down = F.cross_entropy(model(through(x - offset)), labels, reduction="sum")
            numeric = float((up - down) / (2 * step))
            assert gradient.view(-1)[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_fgsm_is_one_signed_step(classifier: torch.nn.Module, images: torch.Tensor) -> None:
    labels = classifier(images).argmax(1)
    _, gradient, _ = loop_loss_and_gradient(classifier, torch.nn.Identity(), images, labels)
    expected = (images + EPS * gradient.sign()).clamp(0, 1)
    adversarial = run_attack(classifier, images, labels, attack_config("fgsm", EPS))
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", attack_method_names())
@pytest.mark.parametrize("targeted", [False, True])
def test_loop_stays_in_budget_and_moves_the_loss(
    classifier: torch.nn.Module, images: torch.Tensor, method: str, targeted: bool
) -> None:
    clean = classifier(images).argmax(1)
    labels = paper_targets(clean) if targeted else clean
    config = attack_config(method, EPS, targeted=targeted)
    adversarial = run_attack(classifier, images, labels, config, through=DiffJPEG(75))
    assert (adversarial - images).abs().max() <= EPS + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    before = F.cross_entropy(classifier(images), labels)
    after = F.cross_entropy(classifier(adversarial), labels)
    assert after < before if targeted else after > before


def test_mim_without_momentum_is_bim(classifier: torch.nn.Module, images: torch.Tensor) -> None:
    labels = classifier(images).argmax(1)
    bim = run_attack(classifier, images, labels, attack_config("bim", EPS))
    mim0 = run_attack(classifier, images, labels, attack_config("mim", EPS, momentum=0.0))
    torch.testing.assert_close(bim, mim0, rtol=0, atol=0)


def test_momentum_changes_the_path(classifier: torch.nn.Module, images: torch.Tensor) -> None:
    labels = classifier(images).argmax(1)
    bim = run_attack(classifier, images, labels, attack_config("bim", EPS))
    mim = run_attack(classifier, images, labels, attack_config("mim", EPS))
    assert not torch.equal(bim, mim)


def test_shape_errors_name_the_shapes(classifier: torch.nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"labels must be shaped \(4,\)"):
        run_attack(classifier, images, torch.zeros(3, dtype=torch.long), attack_config("bim", EPS))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        run_attack(classifier, images[:, :1], torch.zeros(4, dtype=torch.long), attack_config("bim", EPS))
