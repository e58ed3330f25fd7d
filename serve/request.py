"""What one ``POST /v1/cloak`` asks for: its query parameters checked (:func:`parse_request`) and its photo decoded
within the server's limits (:func:`decode_upload`); each refusal a :class:`~comcloak.serve.problems.RequestError`.
Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comcloak.attacks.presets import DEFAULT_STRENGTH, STRENGTHS
from comcloak.codecs import parse_codec
from comcloak.codecs.photos import Photo, PhotoError, load_photo, read_header
from comcloak.engine.outputs import OUTPUT_FORMATS
from comcloak.engine.protection import PROTECTION_KEYWORDS, Protection
from comcloak.errors import UserError
from comcloak.serve.problems import RequestError

# protect, face_preset and face_steps: declared once, on engine.protection.Protection
QUERY_PARAMETERS = frozenset({"strength", "eps", "check", "format", "targeted", "target", "response",
                              *PROTECTION_KEYWORDS})


@dataclass(frozen=True)
class CloakRequest:
    """The attack settings of one request: requests with equal settings and view shapes are batched together."""

    strength: str = DEFAULT_STRENGTH
    eps: float | None = None
    targeted: bool = False
    target: int | None = None
    protection: Protection = Protection()  # ?protect=faces|objects|both, ?face_preset=, ?face_steps=


def parse_request(query: dict[str, str], default_check: str) -> tuple[CloakRequest, Any, str | None, bool]:
    """The attack settings, the check codec, the --format choice and whether JSON was asked for; RequestError 422.

    Example: ``parse_request({"strength": "fast", "response": "json"}, "none")`` ->
    ``(CloakRequest("fast"), <codec none>, "keep", True)``."""
    known = QUERY_PARAMETERS
    unknown = sorted(set(query) - known)
    if unknown:
        raise RequestError(422, f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    strength = query.get("strength", DEFAULT_STRENGTH)
    if strength not in STRENGTHS:
        raise RequestError(422, f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
    try:
        eps = float(query["eps"]) if "eps" in query else None
        target = int(query["target"]) if "target" in query else None
        face_steps = int(query["face_steps"]) if "face_steps" in query else None
    except ValueError as error:
        raise RequestError(422, f"eps must be a number, and target and face_steps integers ({error})") from None
    targeted_text = query.get("targeted", "false").lower()
    if targeted_text not in ("true", "false", "1", "0"):
        raise RequestError(422, f"targeted must be true or false, got {query['targeted']!r}")
    targeted = targeted_text in ("true", "1") or target is not None
    choice = query.get("format", "keep")
    if choice not in OUTPUT_FORMATS:
        raise RequestError(422, f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {choice!r}")
    response = query.get("response", "image")
    if response not in ("image", "json"):
        raise RequestError(422, f"response must be image or json, got {response!r}")
    try:
        check = parse_codec(query.get("check", default_check))
        protection = Protection.from_settings({"protect": query.get("protect"), "face_steps": face_steps,
                                               "face_preset": query.get("face_preset")})
        request = CloakRequest(strength, eps, targeted, target, protection)
        from comcloak.attacks.presets import preset_config

        preset_config(strength, eps=eps, targeted=targeted or None, target=target)  # validates eps and target
    except UserError as error:
        raise RequestError(422, str(error).splitlines()[0]) from None
    return request, check, choice, response == "json"


def decode_upload(body: bytes, max_pixels: int) -> Photo:
    """The upload as a photo; RequestError 400 (unreadable) or 413 (too many pixels, checked before decoding).
    Header and pixels are both read in a decoding worker (``read_header``, ``load_photo``): an upload's warnings,
    hangs or decoder crashes never reach the server process."""
    from PIL import Image

    from comcloak.codecs.decoding import BOMB_REASON
    from comcloak.engine.pipeline import too_small_reason

    try:
        header = read_header("upload", data=body)
    except PhotoError as error:
        if error.reason.startswith(BOMB_REASON):  # past Pillow's bomb guard (twice MAX_IMAGE_PIXELS): never decoded
            raise RequestError(413, f"the photo declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; the "
                                    f"limit is {max_pixels}") from None
        raise RequestError(400, error.reason) from None
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise RequestError(413, f"the photo is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        photo = load_photo("upload", data=body)
    except PhotoError as error:
        raise RequestError(400, error.reason) from None
    too_small = too_small_reason(photo.pixels.shape[1], photo.pixels.shape[0])  # the floor of comcloak cloak
    if too_small is not None:
        raise RequestError(400, too_small)
    return photo
