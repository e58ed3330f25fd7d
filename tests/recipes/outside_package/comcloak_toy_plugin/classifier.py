"""The classifier: comcloak's tiny test architecture under a name of its own, one ``@register_model`` factory."""

from __future__ import annotations

from comcloak.models import TinyClassifier, load_pretrained, register_model


@register_model
def toy_plugin_classifier(num_classes: int = 1000, pretrained: bool | str = False) -> TinyClassifier:
    """The tiny classifier (seed 3); no offline weights ship, so the CLI needs ``--classifier-weights PATH``."""
    return load_pretrained(TinyClassifier(num_classes, seed=3), pretrained, None, "toy_plugin_classifier").eval()
