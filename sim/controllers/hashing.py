"""Pod templates as the Deployment controller compares and names them.

* `normalise(value)`: JSON data with every null, empty map, empty list and empty string dropped,
  recursively. Go's semantic equality treats nil and empty alike, and `kubectl rollout undo` sends a
  template marshalled from a typed struct (`creationTimestamp: null`, `resources: {}`), so templates
  are only ever compared in this form.
* `templates_equal(a, b)`: equality of two pod templates ignoring the `pod-template-hash` label, both
  taken with the API's pod defaults applied (`sim.strategies.default_pod_spec`) and normalised,
  so a template written straight into the Store equals its defaulted copy on a ReplicaSet.
* `template_hash(template, collision_count)`: the `pod-template-hash` value, ≤ 10 characters from the
  safe alphabet. Like upstream it is FNV-1a-32 over a deterministic dump of the template (here the
  normalised template as sorted, compact JSON rather than Go's object dump, so values differ from a
  real cluster's; clients never recompute it) with `collisionCount` appended as 8 little-endian bytes,
  printed in decimal and each digit mapped through the safe alphabet.
* `random_suffix(n)`: the random part of generated names (`web-7c5ddbdf54-x2b4q`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from sim.store import copy_json
from sim.strategies import default_pod_spec

__all__ = [
    "POD_TEMPLATE_HASH",
    "SAFE_ALPHABET",
    "normalise",
    "quick_equal",
    "random_suffix",
    "safe_encode",
    "template_hash",
    "template_without_hash",
    "templates_equal",
]

POD_TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller adds to a ReplicaSet's labels, selector and pod template."""

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""Characters of generated names: no vowels (no accidental words) and no look-alikes (0/o, 1/l)."""

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_EMPTY: tuple[object, ...] = (None, "", {}, [])


def normalise(value: Any) -> Any:
    """`value` with null, empty-map, empty-list and empty-string members dropped, recursively.

    Items of a list are kept even when empty, so list positions still line up.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            cleaned = normalise(item)
            if not _is_empty(cleaned):
                out[str(key)] = cleaned
        return out
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def _is_empty(value: Any) -> bool:
    # `False` and `0` are values (a pointer field set to false differs from an unset one), not emptiness.
    return any(value is marker or (type(value) is type(marker) and value == marker) for marker in _EMPTY)


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """The defaulted, normalised template minus its `pod-template-hash` label."""
    work = copy_json(dict(template))
    if isinstance(work.get("spec"), dict):
        default_pod_spec(work["spec"])
    cleaned: dict[str, Any] = normalise(work)
    labels = (cleaned.get("metadata") or {}).get("labels")
    if labels is not None and POD_TEMPLATE_HASH in labels:
        del labels[POD_TEMPLATE_HASH]
        if not labels:
            del cleaned["metadata"]["labels"]
            if not cleaned["metadata"]:
                del cleaned["metadata"]
    return cleaned


def templates_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two pod templates are semantically equal, ignoring the `pod-template-hash` label."""
    quick = quick_equal(a or {}, b or {})
    if quick is not None:
        return quick
    return template_without_hash(a or {}) == template_without_hash(b or {})


def quick_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    """What `templates_equal` answers, when that is clear without copying, defaulting and normalising
    both: equal when they are equal as written once the `pod-template-hash` label is set aside (the same
    input makes the same normalised template); different when a container at the same position has a
    different non-empty image on each side (normalising keeps both). None otherwise."""
    if _without_hash_label(a) == _without_hash_label(b):
        return True
    containers_a = (a.get("spec") or {}).get("containers") if isinstance(a.get("spec"), dict) else None
    containers_b = (b.get("spec") or {}).get("containers") if isinstance(b.get("spec"), dict) else None
    if isinstance(containers_a, list) and isinstance(containers_b, list):
        for one, other in zip(containers_a, containers_b, strict=False):
            if isinstance(one, dict) and isinstance(other, dict):
                image_a, image_b = one.get("image"), other.get("image")
                if isinstance(image_a, str) and isinstance(image_b, str) and image_a and image_b and image_a != image_b:
                    return False
    return None


def _without_hash_label(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """`template` with its `pod-template-hash` label left out (shallow copies on the way to it only)."""
    meta = template.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict) or POD_TEMPLATE_HASH not in labels:
        return template
    assert isinstance(meta, dict)
    kept = {key: value for key, value in labels.items() if key != POD_TEMPLATE_HASH}
    return {**template, "metadata": {**meta, "labels": kept}}


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of `data`."""
    h = _FNV32_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Map every character to the safe alphabet by its code point (client-go's `SafeEncodeString`)."""
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """The `pod-template-hash` of a Deployment's pod template (≤ 10 characters of `SAFE_ALPHABET`)."""
    dump = json.dumps(template_without_hash(template), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = dump.encode()
    if collision_count is not None:
        # Upstream writes the uint32 into an 8-byte little-endian buffer; the upper four bytes stay zero.
        data += (collision_count & 0xFFFFFFFF).to_bytes(8, "little")
    return safe_encode(str(fnv1a_32(data)))


def random_suffix(length: int = 5, *, rng: random.Random | None = None) -> str:
    """`length` random characters of the safe alphabet, as `generateName` appends them."""
    source = rng or random
    return "".join(source.choice(SAFE_ALPHABET) for _ in range(length))
