"""Platform profiles: named codec chains that approximate what a service does to an uploaded photo.

A profile is usable wherever a codec spec is (``--check facebook``, ``comcloak eval --codecs
facebook,whatsapp``) and keeps its name as its spec. Each is an **approximation** of a service's typical upload
pipeline — resize so the longest side fits, then re-encode — built from Pillow's encoders (Lanczos resize, JPEG with
4:2:0 chroma). Real services change their settings, vary them by upload path and client, and use other encoders;
protection measured after a profile stands for "after a pipeline like this one", not for the service itself.

Progressive JPEG (Facebook's delivery format) is left out: progressive and baseline coding store the same quantised
coefficients, so the decoded pixels are the same.

Sources (public reports; none is a specification):

- facebook: longest side 2048 px for high-quality uploads, recompressed to JPEG; photographylife.com "How to
  Properly Resize Images for Facebook", fixtools.io "Compress image for Facebook". Quality 85 is the commonly
  reported figure.
- instagram: 1080 px wide feed images, JPEG around quality 75 (widely reported upload guides).
- twitter / X: up to 4096 px, JPEG around quality 85 for photos (developer media documentation, upload guides).
- whatsapp: about 1600 px on the longest side, JPEG around quality 60 for photos sent without "HD".
- wechat: about 1280 px, JPEG around quality 50 for photos sent without "original".
- webp-cdn / avif-cdn: image CDNs that serve WebP or AVIF re-encodes at 1600 px (quality 70 / 60 chosen as typical
  CDN defaults).
- reshare: a photo saved from Instagram and forwarded on WhatsApp, resized again to 800 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Codec, CodecSpecError


@dataclass(frozen=True)
class PlatformProfile:
    """One profile: its name, the codec chain it stands for and a one-line description."""

    name: str
    chain: str
    description: str


#: The profiles by name, in the order help text lists them.
PROFILES: dict[str, PlatformProfile] = {profile.name: profile for profile in (
    PlatformProfile("facebook", "resize:2048+jpeg:85", "Facebook: longest side 2048, JPEG 85"),
    PlatformProfile("instagram", "resize:1080+jpeg:75", "Instagram: longest side 1080, JPEG 75"),
    PlatformProfile("twitter", "resize:4096+jpeg:85", "Twitter/X: longest side 4096, JPEG 85"),
    PlatformProfile("whatsapp", "resize:1600+jpeg:60", "WhatsApp: longest side 1600, JPEG 60"),
    PlatformProfile("wechat", "resize:1280+jpeg:50", "WeChat: longest side 1280, JPEG 50"),
    PlatformProfile("webp-cdn", "resize:1600+webp:70", "an image CDN serving WebP: longest side 1600, WebP 70"),
    PlatformProfile("avif-cdn", "resize:1600+avif:60", "an image CDN serving AVIF: longest side 1600, AVIF 60"),
    PlatformProfile("reshare", "resize:1080+jpeg:75+resize:800+jpeg:60",
                    "Instagram, then forwarded on WhatsApp at 800: two hops"),
)}


@dataclass(frozen=True, repr=False)
class Platform(Codec):
    """A named platform profile (:data:`PROFILES`): applies its codec chain, and its spec is the profile's name."""

    profile: str

    usage: ClassVar[str] = "facebook|instagram|twitter|whatsapp|wechat|webp-cdn|avif-cdn|reshare"
    help: ClassVar[str] = "a platform profile: a named resize + codec chain approximating a service"
    preserves_size = False

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise CodecSpecError(f"unknown platform profile {self.profile!r}; known: {', '.join(PROFILES)}")

    @property
    def chain(self) -> Codec:
        """The codec chain the profile stands for."""
        from .spec import parse_codec  # spec imports this module

        return parse_codec(PROFILES[self.profile].chain)

    @property
    def spec(self) -> str:
        return self.profile

    @property
    def imitated(self) -> Codec:
        return self.chain  # a profile is imitated by the stand-in of the chain it stands for

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.chain.output_size(height, width)

    def apply(self, image: np.ndarray) -> np.ndarray:
        return self.chain.apply(image)
