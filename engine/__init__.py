"""comcloak.engine: the public ``Cloaker`` API, the file pipeline and the ``comcloak`` CLI.

``Cloaker`` (and torch with it) is imported on first use, so the CLI builds its parser without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CloakResult", "Cloaker", "CloakerConfigError", "CloakInputError", "CloakerSpec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from comcloak.engine import cloaker

        return getattr(cloaker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
