"""What a TelegramBot author may ask for: the platform operator's image and annotation rules.

A TelegramBot starts Pods of the author's image and writes an Ingress with the author's
annotations, so `create` on TelegramBots is worth as much as `create` on Pods and Ingresses. A
platform that grants the one without the others narrows it here: ALLOWED_IMAGES (image
prefixes) and ALLOWED_INGRESS_ANNOTATIONS (annotation key prefixes). Empty allows anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REASON = "NotAllowed"
# An image prefix must end where a registry path, tag or digest begins: `registry/app` would
# also admit `registry/app-miner`.
IMAGE_PREFIX_ENDS = ("/", ":", "@")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Policy:
    images: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()

    @classmethod
    def parse(cls, *, images: str, annotations: str) -> Policy:
        """From the comma-separated settings; a prefix that admits more than it says is refused
        at start-up."""
        image_prefixes = _split(images)
        loose = [prefix for prefix in image_prefixes if not prefix.endswith(IMAGE_PREFIX_ENDS)]
        if loose:
            raise ValueError(
                f"ALLOWED_IMAGES: {', '.join(loose)} must end with '/', ':' or '@' "
                "(a prefix 'registry/app' would also allow 'registry/app-other')"
            )
        return cls(images=image_prefixes, annotations=_split(annotations))

    def problems(self, spec: Mapping[str, Any]) -> list[str]:
        """What the spec asks for that the platform does not allow, each naming its field."""
        found = []
        image = str(spec.get("image") or "")
        if self.images and not image.startswith(self.images):
            found.append(f"spec.image {image!r} is not from an allowed registry or repository")
        annotations = (spec.get("webhook") or {}).get("annotations") or {}
        if self.annotations:
            refused = sorted(key for key in annotations if not key.startswith(self.annotations))
            if refused:
                found.append(f"spec.webhook.annotations {', '.join(refused)} are not allowed here")
        return found
