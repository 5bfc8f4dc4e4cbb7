"""Check a whole run form before any work starts, and report every problem at once.

Why: a typo used to cost minutes. ``--backbones mobilenet_v2,resnet`` ran ingest and a whole branch before the
unknown name failed, a misspelt ``--weights`` key (``vgg=hed``) was silently ignored and an ImageNet download was
tried offline. Here the run form (``pipelines.settings.Parameters`` as a plain mapping, values already typed) is
checked in one pass: backbone names, the weights spec and its mapping keys, whether each backbone's weights resolve,
image-size minimums, the data and label map, the class names, the MLflow names; unknown names get a did-you-mean.

The CLI calls it before anything is written (``bakeoff run``, ``compile``, ``submit``, ``schedule``) and the pipeline
calls it as its first step (``components/validate.py``: a KFP UI user fills the form by hand), so no retried step
ever meets a configuration error.

What can be checked depends on where we are (:class:`Scope`): names and syntax are always checked; the data URI,
the label map and the weights are checked where they are reachable, and a note says what was left to the cluster.
"""

from __future__ import annotations

import difflib
import enum
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bakeoff import backbones as registry
from bakeoff import env, storage
from bakeoff.errors import BakeoffError

LOCK_SUFFIX = ".lock"  # = bakeoff.registry.LOCK_SUFFIX (the registry lock is a registered model of that name)
REMOTE_CHECK_S = 10.0  # longest wait for S3 or DNS during validation: a dead endpoint must not stall a typo check
# Where Keras downloads ImageNet weights from; a name that does not resolve means "offline" without a TCP timeout.
KERAS_WEIGHTS_HOST = "storage.googleapis.com"
# The file Keras caches under $KERAS_HOME/models for each application's ImageNet weights without the classifier
# (keras/src/applications/*.py; a test builds each application and compares). MobileNetV2 has one file per size.
KERAS_NOTOP_FILES = {
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "MobileNetV2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    "MobileNetV3Small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "EfficientNetV2B0": "efficientnetv2-b0_notop.h5",
    "ConvNeXtTiny": "convnext_tiny_notop.h5",
}
MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)  # sizes with their own Keras weights; any other size loads the 224 ones


class Scope(enum.Enum):
    """How much of the form can be checked where the check runs."""

    SYNTAX = "syntax"  # `bakeoff compile`: names and values only (the form is a template; data may come later)
    REACHABLE = "reachable"  # `submit`/`schedule` from a laptop: + the data/label map where this machine reaches them
    HERE = "here"  # `bakeoff run` and the pipeline's first step: everything must resolve on this machine


@dataclass(frozen=True)
class Problem:
    """One bad field: its name and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class Report:
    """Every problem found, and notes on what could not be checked here (and who checks it instead)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        self.problems.append(Problem(name, message))

    @property
    def fields(self) -> set[str]:
        return {p.field for p in self.problems}


class RunFormError(BakeoffError):
    """The run form has problems; ``problems`` holds each, the message lists them all on one line."""

    def __init__(self, where: str, problems: list[Problem]):
        self.problems = list(problems)
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        super().__init__(f"{where}: {count}: " + "; ".join(str(p) for p in problems))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def split_list(value: Any) -> list[str]:
    """A comma-separated string or a list -> stripped names (empty entries dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(v).strip() for v in items if str(v).strip()]


# ------------------------------------------------------------------------------------------ the one entry point


def validate(
    params: Mapping[str, Any], scope: Scope = Scope.HERE, *, require_data: bool = True, skip: Iterable[str] = ()
) -> Report:
    """Every problem of the run form ``params`` (a ``Parameters``-shaped mapping), checked as far as ``scope`` allows.

    ``skip`` names fields already reported (e.g. by the type check) so they are not reported twice.
    """
    report = Report()
    skip = set(skip) | _check_no_credentials(report, params)
    names = [] if "backbones" in skip else _check_backbones(report, params.get("backbones"))
    if "weights" not in skip:
        _check_weights_spec(report, str(params.get("weights") or ""))
    if "image_size" not in skip:
        _check_image_size(report, int(params.get("image_size") or 0), names)
    if "extra_image_sizes" not in skip:
        _check_extra_sizes(report, params.get("extra_image_sizes"), names)
    for name in ("experiment", "model_name"):
        if name not in skip:
            _check_mlflow_name(report, name, str(params.get(name) or ""))
    classes = [] if "classes" in skip else _check_classes(report, params.get("classes"))
    data_uri, label_map_uri = str(params.get("data_uri") or ""), str(params.get("label_map_uri") or "")
    if require_data and not data_uri and "data_uri" not in skip:
        report.add("data_uri", "no data given; pass --data FOLDER|ARCHIVE|s3://PREFIX (REQUIRED)")
    if scope is Scope.SYNTAX:
        return report
    mapping = None if "label_map_uri" in skip else _check_label_map(report, label_map_uri, scope)
    if data_uri and "data_uri" not in skip:
        found = _check_data(report, data_uri, scope)
        if found is not None and mapping is not None:
            _check_classes_exist(report, classes, {mapping.get(c, c) for c in found}, data_uri)
    if scope is Scope.HERE and "weights" not in report.fields | skip and "image_size" not in skip:
        for name in names:
            _check_weights_resolve(report, name, str(params.get("weights") or ""), int(params.get("image_size") or 0))
    elif scope is Scope.REACHABLE:
        report.notes.append(
            "weights not resolved here: the cluster's mirror ($BAKEOFF_WEIGHTS_URI in its ConfigMap) is checked by "
            "the pipeline's validate step"
        )
    return report


def check(params: Mapping[str, Any], scope: Scope = Scope.HERE, *, where: str = "run form", **kwargs) -> Report:
    """:func:`validate`, raising :class:`RunFormError` with every problem when there is any; returns the report."""
    report = validate(params, scope, **kwargs)
    if report.problems:
        raise RunFormError(where, report.problems)
    return report


# ------------------------------------------------------------------------------------------ names and syntax


def _check_no_credentials(report: Report, params: Mapping[str, Any]) -> set[str]:
    """Fields whose value carries a credential (``user:password@`` in a URI, an AWS key id), each reported once.

    Parameters become MLflow params, KFP run records and the compiled YAML's defaults: a secret there is public.
    The value itself is never echoed, and the field is not checked further (its other messages would show it).
    """
    from bakeoff.redaction import has_credentials

    found = {name for name, value in params.items() if has_credentials(str(value or ""))}
    for name in sorted(found):
        report.add(
            name,
            "holds a credential (user:password@ in a URI, or an access key id); parameters are recorded in MLflow "
            "and KFP, so give credentials through the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD) or a Kubernetes Secret",
        )
    return found


def _check_backbones(report: Report, value: Any) -> list[str]:
    """The known, distinct backbone names (unknown ones reported with the closest known name)."""
    names = split_list(value)
    if not names:
        report.add("backbones", f"name at least one backbone; known: {', '.join(registry.REGISTRY)}")
    known, seen = [], set()
    for name in names:
        if name in seen:
            report.add("backbones", f"{name!r} is listed twice; each backbone is one branch")
        elif name not in registry.REGISTRY:
            report.add(
                "backbones",
                f"unknown backbone {name!r}{did_you_mean(name, registry.REGISTRY)}; "
                f"known: {', '.join(registry.REGISTRY)}",
            )
        else:
            known.append(name)
        seen.add(name)
    return known


def _check_weights_spec(report: Report, spec: str) -> None:
    """A single spec, or a mapping ``backbone=spec,...`` with at most one default entry; every key a backbone."""
    if "=" not in spec:
        if "," in spec:
            report.add("weights", f"{spec!r} lists several specs without backbone names; write backbone=spec,...")
        return
    keys: set[str] = set()
    defaults = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part:
            defaults.append(part)
            continue
        key, _, value = (s.strip() for s in part.partition("="))
        if key not in registry.REGISTRY:
            report.add(
                "weights",
                f"mapping key {key!r} is not a backbone{did_you_mean(key, registry.REGISTRY)}; "
                "keys name backbones, e.g. mobilenet_v2=imagenet,vgg16=hed",
            )
        elif key in keys:
            report.add("weights", f"{key!r} is given twice")
        if not value:
            report.add("weights", f"{key}= has no value; give imagenet, none, a mirror name or a file")
        keys.add(key)
    if len(defaults) > 1:
        report.add("weights", f"more than one default entry ({', '.join(defaults)}); keep one or name the backbones")


def _check_image_size(report: Report, size: int, selected: list[str]) -> None:
    if not size:
        return  # 0: each backbone's own default size
    for name in selected:
        bb = registry.REGISTRY[name]
        if size < bb.min_size:
            report.add("image_size", f"{size} px is below {name}'s minimum of {bb.min_size}; use >= {bb.min_size}")


def _check_extra_sizes(report: Report, value, selected: list[str]) -> None:
    """Each extra input size is a whole number of pixels at or above every selected backbone's minimum."""
    try:
        sizes = [int(v) for v in split_list(value)]
    except ValueError:
        report.add("extra_image_sizes", f"{value!r} is not a comma-separated list of pixel sizes, e.g. 96,128")
        return
    for name in selected:
        low = [s for s in sizes if s < registry.REGISTRY[name].min_size]
        if low:
            minimum = registry.REGISTRY[name].min_size
            report.add("extra_image_sizes", f"{low} px is below {name}'s minimum of {minimum}; use >= {minimum}")


def _check_mlflow_name(report: Report, name: str, value: str) -> None:
    """Names MLflow refuses (empty, '/' or ':' in a model name), and the registry lock's reserved suffix."""
    if not value.strip():
        report.add(name, "must not be empty")
        return
    if name == "model_name" and (problem := model_name_problem(value)):
        report.add(name, problem)


def model_name_problem(value: str) -> str | None:
    """Why MLflow (or the promotion lock) would refuse ``value`` as a registered model name, or None."""
    if not value.strip():
        return "must not be empty"
    if "/" in value or ":" in value:
        return f"{value!r}: MLflow model names cannot contain '/' or ':'"
    if value.endswith(LOCK_SUFFIX):
        return f"{value!r}: names ending in {LOCK_SUFFIX} are reserved for the promotion lock"
    return None


def _check_classes(report: Report, value: Any) -> list[str]:
    classes = split_list(value)
    if not classes:
        return []
    if len(set(classes)) != len(classes):
        twice = sorted({c for c in classes if classes.count(c) > 1})
        report.add("classes", f"{', '.join(twice)} listed twice")
    if len(set(classes)) < 2:
        report.add("classes", "name at least 2 classes to compare, or leave it empty for all")
    return classes


# ------------------------------------------------------------------------------------------ resources


def _reachable_here(report: Report, name: str, uri: str, scope: Scope, *, prefix: bool) -> bool:
    """True when ``uri`` is an ``s3://`` URI that exists or a local path to check on this machine; otherwise the
    problem is reported (or, where only reachable resources are checked, a note says who checks it) and False."""
    if storage.is_s3(uri):
        state = _s3_state(uri, prefix=prefix)
        if state != "exists":
            _report_s3(report, name, uri, state, scope)
        return state == "exists"
    if scope is Scope.REACHABLE:
        report.notes.append(f"{name} {uri} is a path on the cluster: not checked here")
        return False
    return True


def _check_label_map(report: Report, uri: str, scope: Scope) -> dict[str, str] | None:
    """The label map as a dict ({} when none); None when it could not be read (reported or noted)."""
    if not uri:
        return {}
    if not _reachable_here(report, "label_map_uri", uri, scope, prefix=False):
        return None
    if not storage.is_s3(uri) and not os.path.isfile(uri):
        report.add("label_map_uri", f"no such file {uri}; give a JSON or YAML file (path or s3://)")
        return None
    from bakeoff.ingest import load_label_map

    try:
        return load_label_map(uri)
    except BakeoffError as exc:
        report.add("label_map_uri", str(exc))
        return None


def _check_data(report: Report, uri: str, scope: Scope) -> set[str] | None:
    """Check the raw data exists; returns the raw class names when cheap to list (a local folder), else None."""
    from bakeoff.sources import ARCHIVE_SUFFIXES, is_archive

    kinds = f"a folder of class folders, a {'/'.join(ARCHIVE_SUFFIXES)} archive or an s3:// prefix"
    if not _reachable_here(report, "data_uri", uri, scope, prefix=not is_archive(uri)) or storage.is_s3(uri):
        return None
    if not os.path.exists(uri):
        report.add("data_uri", f"no such folder or file {uri}; give {kinds}")
        return None
    if os.path.isfile(uri):
        if not is_archive(uri):
            report.add("data_uri", f"{uri} is a file but not an archive; give {kinds}")
        return None
    found = _folder_classes(uri)
    if not found:
        report.add("data_uri", f"{uri} holds no files; give {kinds}")
        return None
    return found


def _folder_classes(root: str) -> set[str]:
    """Names of the folders that directly hold a file (the raw class names ingest will see), hidden ones skipped."""
    from bakeoff.sources import is_litter

    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        if rel != "." and any(not is_litter(f"{rel}/{name}") for name in filenames):
            found.add(os.path.basename(dirpath))
    return found


def _check_classes_exist(report: Report, classes: list[str], available: set[str], data_uri: str) -> None:
    for name in classes:
        if name not in available:
            report.add(
                "classes",
                f"no class {name!r} in {data_uri} after the label map{did_you_mean(name, available)}; "
                f"classes there: {_some(sorted(available))}",
            )
    if not classes and len(available) < 2:
        report.add("data_uri", f"{data_uri} has {len(available)} class folder(s); a bake-off needs at least 2")


def _some(names: list[str], most: int = 30) -> str:
    """Up to ``most`` names, comma-separated, and how many more there are."""
    shown = ", ".join(names[:most])
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


def _s3_state(uri: str, *, prefix: bool) -> str:
    """``exists``, ``missing``, or why S3 could not answer (no credentials, no endpoint, no answer in time)."""

    def probe() -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = storage.split_s3(uri)
        client = storage.s3_client()
        try:
            if prefix:
                listed = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else "", MaxKeys=1)
                return "exists" if listed.get("KeyCount", 0) else "missing"
            client.head_object(Bucket=bucket, Key=key)
            return "exists"
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                return "missing"
            return f"unreachable: S3 said {code or exc}"
        except BotoCoreError as exc:
            return f"unreachable: {type(exc).__name__}"

    return _within(REMOTE_CHECK_S, probe, f"unreachable: no answer within {REMOTE_CHECK_S:.0f} s")


def _report_s3(report: Report, name: str, uri: str, state: str, scope: Scope) -> None:
    from bakeoff.redaction import redact

    shown = redact(uri)
    if state == "missing":
        report.add(name, f"nothing at {shown}; check the bucket and prefix")
    elif scope is Scope.REACHABLE:
        report.notes.append(f"{name} {shown} not checked here ({state}); the pipeline's validate step checks it")
    else:
        report.add(name, f"cannot read {shown} ({state}); check AWS_ENDPOINT_URL and the credentials")


def _within(seconds: float, probe: Callable[[], str], timeout_answer: str) -> str:
    """``probe()`` in a daemon thread, or ``timeout_answer`` when it takes longer (the thread is left behind)."""
    answer: list[str] = []
    worker = threading.Thread(target=lambda: answer.append(probe()), daemon=True)
    worker.start()
    worker.join(seconds)
    return answer[0] if answer else timeout_answer


# ------------------------------------------------------------------------------------------ weights


def _check_weights_resolve(report: Report, backbone: str, spec: str, image_size: int) -> None:
    """This backbone's weights resolve here (mirror, file, s3://), or, for a Keras download, are cached or reachable."""
    from bakeoff.weights import MIRROR_ENV, parse_spec, resolve_weights

    try:
        resolved = resolve_weights(backbone, spec or "imagenet")
    except BakeoffError as exc:
        report.add("weights", str(exc))
        return
    if not resolved.pretrained or resolved.local_path is not None:
        return
    bb = registry.REGISTRY[backbone]
    cached = keras_cached_weights(bb.application, image_size or bb.default_size)
    if cached is None or os.path.isfile(cached):
        return
    reachable = _within(REMOTE_CHECK_S, _resolves, "no DNS answer in time")
    if reachable != "yes":
        named = parse_spec(spec or "imagenet", backbone)
        report.add(
            "weights",
            f"{named} for {backbone} needs a Keras download from {KERAS_WEIGHTS_HOST}, which this machine cannot "
            f"reach ({reachable}) and {cached} is not cached; set ${MIRROR_ENV} to a mirror with "
            f"{backbone}/imagenet.weights.h5 (`bakeoff weights import`), pass a weights file, or use none",
        )


def keras_cached_weights(application: str, image_size: int) -> str | None:
    """Where Keras keeps this application's ImageNet no-top weights (None when not known): the file under
    ``$KERAS_HOME/models``, or under ``/tmp/.keras/models`` where Keras falls back when its home is read-only."""
    pattern = KERAS_NOTOP_FILES.get(application)
    if pattern is None:
        return None
    rows = image_size if image_size in MOBILENET_V2_ROWS else 224
    name = pattern.format(rows=rows)
    home = os.path.join(env.keras_home(), "models", name)
    fallback = os.path.join("/tmp", ".keras", "models", name)
    return fallback if not os.path.isfile(home) and os.path.isfile(fallback) else home


def _resolves() -> str:
    import socket

    try:
        socket.getaddrinfo(KERAS_WEIGHTS_HOST, 443)
        return "yes"
    except OSError as exc:
        return f"cannot resolve {KERAS_WEIGHTS_HOST}: {exc.strerror or exc}"
