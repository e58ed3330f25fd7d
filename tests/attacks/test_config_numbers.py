"""Issue 23, defect 9: every number of the attack configuration is checked once, where the configuration is made —
NaN, infinity, a float where a count belongs and out-of-range values are one clear ValueError (a UserError), whether
they come from the CLI, ``Cloaker(...)``, a preset or ``AttackConfig(...)`` itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.attacks import AttackConfig, AttackConfigError, attack_config
from comcloak.attacks.config import EotSettings
from comcloak.attacks.presets import preset_config
from comcloak.cli.main import main
from comcloak.engine.cloaker import Cloaker, CloakerConfigError

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(("given", "message"), [
    ({"momentum": NAN}, "momentum must be a finite number, got nan"),
    ({"momentum": INF}, "momentum must be a finite number, got inf"),
    ({"momentum": -INF}, "momentum must be a finite number, got -inf"),
    ({"momentum": 1e9}, r"momentum must be in \[0, 2\]"),
    ({"steps": 2.5}, "steps must be an integer, got 2.5"),
    ({"draws": NAN}, "draws must be an integer, got nan"),
    ({"draws": INF}, "draws must be an integer, got inf"),
    ({"attack_size": NAN}, "attack_size must be an integer, got nan"),
    ({"seed": 2**64}, "seed must be a signed 64-bit integer"),
    ({"seed": 0.5}, "seed must be an integer"),
    ({"targeted": True, "target": 1.5}, "target must be an integer"),
])
def test_a_preset_refuses_numbers_the_loop_cannot_run(given: dict, message: str) -> None:
    with pytest.raises(AttackConfigError, match=message):
        preset_config("fast", **given)


def test_the_configuration_object_itself_refuses_them() -> None:
    good = attack_config("mim", 5 / 255)
    for field, value in (("momentum", INF), ("momentum", NAN), ("eps", NAN), ("alpha", INF), ("steps", 0)):
        with pytest.raises(AttackConfigError, match=field):
            AttackConfig(**{**good.__dict__, field: value})
    for field, value in (("flip_rate", NAN), ("rescale_range", (1.0, INF)), ("downscale_range", (NAN, 1.0)),
                         ("view_size", 224.0)):
        with pytest.raises(AttackConfigError, match=field):
            EotSettings(**{field: value})
    assert attack_config("mim", 5 / 255, momentum=1).momentum == 1.0  # one representation, as before


@pytest.mark.parametrize("given", [{"momentum": INF}, {"momentum": NAN}, {"draws": NAN}, {"threads": 0}])
def test_the_cloaker_refuses_them_before_loading_anything(given: dict) -> None:
    with pytest.raises(CloakerConfigError) as raised:
        Cloaker(classifier="tiny_classifier", through="none", device="cpu", **given)
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)


def test_the_cli_turns_momentum_nan_into_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    code = main(["cloak", str(photo), "-o", str(out), "--classifier", "tiny_classifier", "--steps", "2",
                 "--attack-size", "48", "--momentum", "nan", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "momentum must be a finite number, got nan" in err
    assert not out.exists()  # nothing done
