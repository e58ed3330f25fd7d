"""Stand-ins for the compressor: spec parsing, ComModel on any size, mixtures."""

from __future__ import annotations

import pytest
import torch

from comcloak.attacks import ThroughSpecError, make_through
from comcloak.attacks.through import ComModelThrough, RandomChoiceThrough
from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.models import create_model, save_safetensors


def test_identity_and_diffjpeg() -> None:
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(make_through("none")(x), x)
    assert isinstance(make_through("diffjpeg:50"), DiffJPEG)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("diffjpeg:500", "diffjpeg quality must be an integer in 1..100"),
        ("diffjpeg:x", "diffjpeg quality must be an integer in 1..100"),
        ("comodel:/no/such/file.safetensors", "comodel:/no/such/file.safetensors: no such weights file"),
        ("comodel", "comodel: needs a codec spec or a weights file"),
        ("mix:diffjpeg:50", "needs at least two stand-ins"),
        ("jpegish", "unknown --through 'jpegish'; available: none, diffjpeg:Q, comodel:CODEC, comodel:PATH"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ThroughSpecError, match=message):
        make_through(spec)


def test_comodel_from_weights_file_runs_on_any_size(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("comodel_tiny").eval()
    path = tmp_path / "tiny.safetensors"
    save_safetensors(model.state_dict(), path)
    through = make_through(f"comodel:{path}")
    assert isinstance(through, ComModelThrough)
    x = torch.rand(2, 3, 37, 50)
    y = through(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # On a multiple of 16 it is the bare model, clipped.
    x16 = torch.rand(1, 3, 32, 48)
    torch.testing.assert_close(through(x16), model(x16).clamp(0, 1))
    assert not any(parameter.requires_grad for parameter in through.parameters())


def test_shipped_comodel_is_differentiated_through_its_continuous_rounding() -> None:
    """comodel:CODEC uses the continuous relaxation; comodel-cubic:CODEC keeps the cubic it was trained with."""
    relaxed = make_through("comodel:jpeg:50")
    cubic = make_through("comodel-cubic:jpeg:50")
    assert relaxed.comodel.rounding == "continuous" and cubic.comodel.rounding == "cubic"
    torch.testing.assert_close(relaxed.comodel.state_dict(), cubic.comodel.state_dict())
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    assert (relaxed(x) - cubic(x)).abs().max() > 1e-3
    with pytest.raises(ThroughSpecError, match="comodel-cubic: needs a codec spec"):
        make_through("comodel-cubic:")


def test_mixture_picks_are_seeded() -> None:
    picks = []
    for _ in range(2):
        mixture = make_through("mix:diffjpeg:25|diffjpeg:75", seed=3)
        assert isinstance(mixture, RandomChoiceThrough)
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        picks.append(torch.stack([mixture(x) for _ in range(6)]))
    torch.testing.assert_close(picks[0], picks[1])


def test_expectation_over_stand_ins_averages_their_gradients() -> None:
    import comcloak.models as M
    from comcloak.attacks import attack_config
    from comcloak.attacks.loop import descent_gradient
    from comcloak.attacks.through import ExpectationThrough

    def loop_loss_and_gradient(classifier, through, x, labels):
        """The loop's gradient path (descent_gradient) and the logits averaged over an eot: stand-in's copies."""
        loss, gradient = descent_gradient([classifier], through, x, labels[:, None], attack_config("bim", 8 / 255))
        with torch.no_grad():
            logits = classifier(through(x)).view(getattr(through, "copies", 1), *labels.shape, -1).mean(0)
        return loss, gradient, logits

    classifier = M.create_model("tiny_classifier")
    x = torch.rand(2, 3, 32, 32)
    labels = torch.tensor([3, 9])
    parts = ["diffjpeg:25", "diffjpeg:75", "comodel:jpeg:50"]
    eot = make_through("eot:" + "|".join(parts))
    assert isinstance(eot, ExpectationThrough) and eot.copies == 3
    loss, gradient, logits = loop_loss_and_gradient(classifier, eot, x, labels)
    singles = [loop_loss_and_gradient(classifier, make_through(part), x, labels) for part in parts]
    torch.testing.assert_close(loss, sum(s[0] for s in singles) / 3)
    torch.testing.assert_close(gradient, sum(s[1] for s in singles) / 3)
    torch.testing.assert_close(logits, sum(s[2] for s in singles) / 3)
    with pytest.raises(ThroughSpecError, match="eot: needs at least two"):
        make_through("eot:diffjpeg:50")
