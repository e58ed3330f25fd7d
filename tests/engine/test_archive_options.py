"""The archive's output options as one object, and the settings hash a finished folder is resumed by."""

from __future__ import annotations

import pytest

import comcloak
from comcloak.attacks.presets import preset_config
from comcloak.codecs.photos import WriteOptions
from comcloak.engine.archive import archive_settings
from comcloak.engine.archive_options import ArchiveOptions
from comcloak.engine.manifest import settings_hash
from comcloak.errors import UserError


class _Spec:
    """What :meth:`ArchiveOptions.settings` reads of a Cloaker or a CloakerSpec."""

    def __init__(self, config, precision: str) -> None:
        self.config, self.precision = config, precision


# Computed by the code before ArchiveOptions (archive_settings(config, format, write, precision) passed by hand,
# comcloak.__version__ pinned): a folder cloaked before the change must be resumed, not redone, after it. The
# presets' labels were read from the working view then (label_view "attack"; they read the centre crop since), and
# ``balanced`` stepped by the sign within a uniform eps 5, ``fast`` by the sign (their numbers then, spelled out).
PINNED = [
    (preset_config("balanced", label_view="attack", eps=5, step_rule="sign", budget="uniform"), ArchiveOptions(),
     "fp32", "78278d3b8e8c7e40"),
    (preset_config("fast", eps=6.0, label_view="attack", step_rule="sign"),
     ArchiveOptions(output_format="jpeg", write=WriteOptions(90, "strip"), batch_size=3, overwrite=True, wait=True,
                    check="none"),
     "bf16", "6d38bd38285d0fa3"),
]


@pytest.mark.parametrize(("config", "options", "precision", "digest"), PINNED)
def test_the_settings_hash_of_given_options_is_unchanged(monkeypatch, config, options, precision, digest) -> None:
    monkeypatch.setattr(comcloak, "__version__", "0.0.0-pinned")
    assert settings_hash(options.settings(_Spec(config, precision))) == digest
    assert settings_hash(archive_settings(config, options.output_format, options.write, precision)) == digest


def test_the_crop_label_view_is_hashed_so_older_folders_are_cloaked_again() -> None:
    """The presets' labels from the attacker's centre crop give other cloaks than the working view's did: a folder
    cloaked with the older labels is redone, not resumed."""
    working = archive_settings(preset_config("balanced", label_view="attack"), "png", WriteOptions(), "fp32")
    crop = archive_settings(preset_config("balanced"), "png", WriteOptions(), "fp32")
    assert "label_view" not in working["config"] and crop["config"]["label_view"] == "crop"
    assert settings_hash(working) != settings_hash(crop)


def test_archive_options_refuse_a_bad_format_or_batch_size() -> None:
    with pytest.raises(UserError, match="output format"):
        ArchiveOptions(output_format="gif")
    with pytest.raises(UserError, match="batch size"):
        ArchiveOptions(batch_size=0)


@pytest.mark.parametrize("changed", [{"bsr_rate": 0.5}, {"sia_rate": 0.5}, {"bsr_rate": 0.5, "bsr_blocks": 4}])
def test_block_draws_key_the_hash_only_when_on(changed: dict) -> None:
    """Block transforms off (rate 0) add nothing to the hash (finished folders are not redone); on, they key it."""
    from dataclasses import replace

    config = preset_config("balanced")
    write = WriteOptions()
    base = settings_hash(archive_settings(config, "same", write, "fp32"))
    off = replace(config, eot=replace(config.eot, bsr_blocks=4, sia_blocks=5))
    assert settings_hash(archive_settings(off, "same", write, "fp32")) == base
    on = replace(config, eot=replace(config.eot, **changed))
    assert settings_hash(archive_settings(on, "same", write, "fp32")) != base


def test_per_photo_stopping_keys_the_hash_only_when_on() -> None:
    """Stopping off (stop_after 0) adds nothing, whatever its margin; on, both settings key it."""
    from dataclasses import replace

    config = preset_config("balanced")
    write = WriteOptions()
    base = settings_hash(archive_settings(config, "same", write, "fp32"))
    assert settings_hash(archive_settings(replace(config, stop_margin=3.0), "same", write, "fp32")) == base
    on = settings_hash(archive_settings(replace(config, stop_after=2), "same", write, "fp32"))
    assert on != base
    assert settings_hash(archive_settings(replace(config, stop_after=2, stop_margin=3.0), "same", write, "fp32")) != on
