"""Where a backbone's weights come from: ``imagenet``, ``none``, a file/s3:// URI, or a name in a weights mirror.

A weights mirror (a folder or an s3:// prefix, default ``$BAKEOFF_WEIGHTS_URI``) lets an air-gapped cluster resolve
``imagenet`` to its own copies. Layout::

    <mirror>/<backbone>/<name>.weights.h5      features-only weights (include_top=False)
    <mirror>/<backbone>/<name>_top.weights.h5  optional: the same with the ImageNet classifier
    <mirror>/<backbone>/<name>.json            sidecar: sha256, provenance, preprocessing, bn_epsilon
    <mirror>/.imported                         marker written by `bakeoff weights import`

Weights converted from torchvision carry ``preprocessing: torch`` and ``bn_epsilon: 1e-5`` in their sidecar, and
every consumer honours them through ``ResolvedWeights``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

from bakeoff import env, storage
from bakeoff.errors import BakeoffError

WEIGHTS_SUFFIX = ".weights.h5"
MIRROR_ENV = env.WEIGHTS_URI.name  # for messages (and benchmarks/run.py)
IMPORTED_MARKER = ".imported"


@dataclass(frozen=True)
class ResolvedWeights:
    spec: str
    name: str
    local_path: str | None
    sha256: str | None
    pretrained: bool
    preprocessing: str
    bn_epsilon: float | None
    source: str
    top_path: str | None = None  # local copy of the with-classifier (``_top``) sibling, when the file has one

    def identity(self) -> str:
        """What names these weights in cache keys: the file's sha256 when there is a file, else the spec."""
        return self.sha256 or f"{self.name}:{self.spec}"

    def top_weights(self) -> str:
        """The local path of the with-classifier weights, or a one-line error saying where they were looked for."""
        if self.top_path is not None:
            return self.top_path
        if self.local_path is None or not self.local_path.endswith(WEIGHTS_SUFFIX):
            raise BakeoffError(f"not a .weights.h5 file: {self.local_path or self.spec}")
        raise BakeoffError(
            f"no classifier weights beside {self.local_path} (looked for {top_sibling(self.local_path)})"
        )

    def to_json(self) -> dict:
        """The weights block reported in features.json / head.json / model.json / metrics.json."""
        return {
            "spec": self.spec,
            "name": self.name,
            "sha256": self.sha256,
            "pretrained": self.pretrained,
            "source": self.source,
        }


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256, read in chunks by the standard library (weights files are tens of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def top_sibling(uri: str) -> str:
    """``x/imagenet.weights.h5`` -> ``x/imagenet_top.weights.h5`` (the with-classifier sibling's name)."""
    return uri[: -len(WEIGHTS_SUFFIX)] + "_top" + WEIGHTS_SUFFIX


def sidecar_uri(weights_uri: str) -> str:
    base = weights_uri[: -len(WEIGHTS_SUFFIX)] if weights_uri.endswith(WEIGHTS_SUFFIX) else weights_uri
    return base + ".json"


def _localize(uri: str, expected_sha: str | None) -> str:
    """A local copy of a local or s3:// file; s3 copies are cached by URI and re-fetched if the hash is off."""
    if not storage.is_s3(uri):
        return uri
    parent, _, base = uri.rpartition("/")
    local = env.weights_cache_dir() / hashlib.sha256(parent.encode()).hexdigest()[:24] / base
    if not (local.exists() and (expected_sha is None or sha256_file(local) == expected_sha)):
        storage.download(uri, local)
    return str(local)


def parse_spec(spec: str, backbone: str) -> str:
    """Pick this backbone's weight from a per-backbone mapping like ``mobilenet_v2=imagenet,vgg16=hed``.

    Entries without ``=`` are the default for backbones not named; with no default a backbone gets ``imagenet``.
    """
    if "=" not in spec:
        return spec.strip()
    default = "imagenet"
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            key, _, value = part.partition("=")
            if key.strip() == backbone:
                return value.strip()
        else:
            default = part
    return default


def _read_sidecar(weights_uri: str) -> dict:
    uri = sidecar_uri(weights_uri)
    if not storage.exists(uri):
        return {}
    try:
        return json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise BakeoffError(f"weights sidecar {uri} is not JSON: {exc}") from exc


def _check_sha(spec: str, actual: str, expected: str | None) -> None:
    if expected and actual.lower() != expected.lower():
        raise BakeoffError(f"weights {spec}: sha256 {actual[:16]}... does not match the expected {expected[:16]}...")


def _top_path(uri: str, meta: dict) -> str | None:
    """Where the with-classifier sibling of ``uri`` is on this machine: beside a local file when it exists there;
    for s3:// fetched into the cache when the sidecar lists it (the classifier travels with its weights)."""
    if not uri.endswith(WEIGHTS_SUFFIX):
        return None
    top = top_sibling(uri)
    if storage.is_s3(uri):
        return _localize(top, meta["top_sha256"]) if meta.get("top_sha256") else None
    return top if os.path.isfile(top) else None


def _from_file(spec: str, name: str, uri: str, sha256: str | None, source: str) -> ResolvedWeights:
    """A weights file with its provenance: the sidecar's sha256 (and preprocessing), or an explicit ``sha256``.

    Without either the file is refused: its preprocessing and BatchNorm epsilon live in the sidecar, so guessing
    (Keras defaults) would silently give wrong features for converted weights such as torchvision's.
    """
    meta = _read_sidecar(uri)
    if not meta.get("sha256") and not sha256:
        raise BakeoffError(
            f"weights {uri} have no provenance sidecar ({sidecar_uri(uri)}); re-import them (`bakeoff weights import`) "
            "or pass --weights-sha256 with the file's sha256 to use it as it is"
        )
    if not meta:
        source = f"{source} (no sidecar; sha256 given explicitly)"
    local = _localize(uri, sha256 or meta.get("sha256"))
    top = _top_path(uri, meta)
    if not os.path.isfile(local):
        raise BakeoffError(f"weights file not found: {uri}")
    actual = sha256_file(local)
    _check_sha(spec, actual, sha256)
    if meta.get("sha256") and meta["sha256"] != actual:
        raise BakeoffError(f"weights {uri} do not match the sha256 in their sidecar; re-run `bakeoff weights import`")
    return ResolvedWeights(
        spec=spec,
        name=name,
        local_path=local,
        sha256=actual,
        pretrained=True,
        preprocessing=meta.get("preprocessing", "keras"),
        bn_epsilon=meta.get("bn_epsilon"),
        source=meta.get("provenance") and f"{source} ({meta['provenance']})" or source,
        top_path=top,
    )


def resolve_weights(
    backbone: str, spec: str = "imagenet", sha256: str | None = None, mirror: str | None = None
) -> ResolvedWeights:
    """Turn ``--weights`` into something a builder can load, checking the sha256 when one is given."""
    from bakeoff.backbones import get_backbone

    bb = get_backbone(backbone)
    requested = spec
    spec = parse_spec(spec or "imagenet", bb.name)
    if spec == "none":
        return ResolvedWeights(requested, "none", None, None, False, "keras", None, "random init (smoke tests only)")
    looks_like_file = storage.is_s3(spec) or spec.endswith((".h5", ".keras")) or os.sep in spec
    if looks_like_file:
        if not storage.is_s3(spec) and not os.path.isfile(spec):
            raise BakeoffError(f"weights file not found: {spec}")
        if storage.is_s3(spec) and not storage.exists(spec):
            raise BakeoffError(f"weights file not found: {spec}")
        return _from_file(requested, "file", spec, sha256, spec)
    mirror = mirror or env.weights_mirror_uri()
    # A registry entry with a cut point shares its full network's weights (inception_v3_mixed7 -> inception_v3).
    folders = [bb.name] + _same_network(bb.name)
    looked = []
    if mirror:
        for folder in folders:
            uri = storage.join(mirror, folder, spec + WEIGHTS_SUFFIX)
            looked.append(uri)
            if storage.exists(uri):
                return _from_file(requested, spec, uri, sha256, f"mirror {uri}")
    if spec == "imagenet":
        if sha256:
            raise BakeoffError(
                "--weights-sha256 needs a weights file; Keras's own imagenet download has none "
                f"(looked in {looked or 'no mirror: $' + MIRROR_ENV + ' is unset'})"
            )
        return ResolvedWeights(
            requested,
            "imagenet",
            None,
            None,
            True,
            "keras",
            None,
            "keras.applications ImageNet download (needs internet)",
        )
    where = (
        ", ".join(looked)
        if looked
        else f"no mirror (set ${MIRROR_ENV} to a weights mirror; `bakeoff weights import` fills one)"
    )
    raise BakeoffError(f"weights {spec!r} for {bb.name} not found; looked in: {where}")


def _same_network(name: str) -> list[str]:
    """Registry entries built from the same keras application (they can share mirror weights)."""
    from bakeoff.backbones import REGISTRY

    app = REGISTRY[name].application
    return [b.name for b in REGISTRY.values() if b.application == app and b.name != name and b.cut_layer is None]


def list_mirror(mirror: str | None = None) -> list[dict]:
    """Every weight in a mirror with its sidecar (for `bakeoff weights list`)."""
    mirror = mirror or env.weights_mirror_uri()
    if not mirror:
        raise BakeoffError(f"no mirror: pass --mirror or set ${MIRROR_ENV}")
    rows = []
    for item in storage.list_files(mirror):
        parts = item.relpath.split("/")
        if len(parts) != 2 or not parts[1].endswith(WEIGHTS_SUFFIX) or parts[1].endswith("_top" + WEIGHTS_SUFFIX):
            continue
        meta = _read_sidecar(item.uri)
        rows.append(
            {
                "backbone": parts[0],
                "name": parts[1][: -len(WEIGHTS_SUFFIX)],
                "uri": item.uri,
                "size_mb": round(item.size / 1e6, 1),
                "sha256": meta.get("sha256"),
                "preprocessing": meta.get("preprocessing", "keras"),
                "bn_epsilon": meta.get("bn_epsilon"),
                "has_top": meta.get("top_sha256") is not None,
                "provenance": meta.get("provenance", ""),
            }
        )
    return rows


def asjson(resolved: ResolvedWeights) -> dict:
    return asdict(resolved)
