"""comcloak.engine: the public ``Cloaker`` API, the file pipeline and the ``comcloak`` CLI."""

from comcloak.engine.cloaker import Cloaker, CloakerConfigError, CloakResult

__all__ = ["CloakResult", "Cloaker", "CloakerConfigError"]
