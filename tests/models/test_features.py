"""Features: output contract, cache hit / miss / edited / added image, s3 cache, CLI, and real pretrained signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bakeoff import manifest, storage
from bakeoff.errors import BakeoffError
from bakeoff.features import extract_features, load_features

from support import write_dataset


def test_features_contract_and_cache_hit(tiny_dataset, tmp_path, mirror_env):
    cache = str(tmp_path / "cache")
    first = extract_features(str(tiny_dataset), str(tmp_path / "f1"), "mobilenet_v2", image_size=32, cache_uri=cache)
    arrays, info = load_features(str(tmp_path / "f1"))
    df = manifest.read_manifest(tiny_dataset)
    assert info == first
    assert arrays["features"].shape == (12, 1280) and arrays["features"].dtype == np.float32
    assert arrays["sha256"].tolist() == df["sha256"].tolist()
    assert arrays["split"].tolist() == df["split"].tolist() and arrays["label"].tolist() == df["label"].tolist()
    assert info["weights"]["pretrained"] is True and info["weights"]["sha256"]
    assert (info["backbone"], info["image_size"], info["cut"], info["feature_dim"]) == ("mobilenet_v2", 32, None, 1280)
    assert info["classes"] == ["cat", "dog"] and info["dataset_hash"] == manifest.dataset_hash(df)
    assert (info["cache_hits"], info["cache_misses"]) == (0, 12) and info["images_per_s"] > 0
    assert not np.allclose(arrays["features"][0], arrays["features"][-1])

    again = extract_features(str(tiny_dataset), str(tmp_path / "f2"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert (again["cache_hits"], again["cache_misses"], again["forward_images"]) == (12, 0, 0)
    np.testing.assert_array_equal(load_features(str(tmp_path / "f2"))[0]["features"], arrays["features"])


def test_taps_come_from_the_same_pass_and_share_the_cut_cache(tiny_dataset, tmp_path, mirror_env):
    """Tap vectors are cached under the key of a cut at that layer: one pass fills both, and equal each other."""
    cache, tap = str(tmp_path / "cache"), "block_13_expand_relu"
    info = extract_features(str(tiny_dataset), str(tmp_path / "t"), "mobilenet_v2", image_size=32, cache_uri=cache)
    arrays, _ = load_features(str(tmp_path / "t"))
    assert info["taps"] == {tap: 576} and arrays[f"tap_{tap}"].shape == (12, 576)
    assert info["feature_dim"] == 1280 and info["cut"] is None

    cut = extract_features(
        str(tiny_dataset), str(tmp_path / "c"), "mobilenet_v2", image_size=32, cut=tap, taps=False, cache_uri=cache
    )
    assert cut["cache_misses"] == 0 and cut["feature_dim"] == 576  # the tap's shards ARE the cut's cache
    np.testing.assert_array_equal(load_features(str(tmp_path / "c"))[0]["features"], arrays[f"tap_{tap}"])

    plain = extract_features(
        str(tiny_dataset), str(tmp_path / "p"), "mobilenet_v2", image_size=32, taps=False, cache_uri=str(tmp_path / "x")
    )
    assert plain["cache_misses"] == 12 and plain["taps"] == {}  # computed afresh by a single-output model
    np.testing.assert_allclose(load_features(str(tmp_path / "p"))[0]["features"], arrays["features"], atol=1e-5)


def test_decoded_tensor_is_shared_across_backbones_and_changes_nothing(tiny_dataset, tmp_path, mirror_env, monkeypatch):
    """The dataset is decoded once per size into one tensor; the next backbone reads it as is, and the vectors equal
    those computed with the files decoded in the loop (the cache turned off)."""
    import keras

    keras.utils.set_random_seed(0)  # every run must build the same random network
    first = extract_features(
        str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", "none", image_size=32, cache_uri=str(tmp_path / "c1")
    )
    (tensor,) = (tmp_path / "decoded").glob("*.npy")
    before = tensor.stat().st_mtime_ns
    keras.utils.set_random_seed(0)
    second = extract_features(
        str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", "none", image_size=32, cache_uri=str(tmp_path / "c2")
    )  # empty vector cache: forward runs, on the stored tensor
    assert second["cache_misses"] == 12 and tensor.stat().st_mtime_ns == before
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", "off")
    keras.utils.set_random_seed(0)
    extract_features(
        str(tiny_dataset), str(tmp_path / "c"), "mobilenet_v2", "none", image_size=32, cache_uri=str(tmp_path / "c3")
    )
    a, b, c = (load_features(str(tmp_path / x))[0]["features"] for x in "abc")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    assert first["cache_key"] == second["cache_key"]


def test_cache_never_builds_the_model_on_a_full_hit(tiny_dataset, tmp_path, mirror_env, monkeypatch):
    cache = str(tmp_path / "cache")
    extract_features(str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=cache)
    import bakeoff.backbones

    def forbidden(*args, **kwargs):
        raise AssertionError("a full cache hit must not build or run the backbone")

    monkeypatch.setattr(bakeoff.backbones, "build_feature_extractor", forbidden)
    info = extract_features(str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert info["cache_misses"] == 0


def _replace_image(dataset: Path, row: int, make_image, seed: int) -> str:
    """Edit one image the way re-ingest would see it: new bytes, new sha256 in the manifest."""
    df = manifest.read_manifest(dataset, resolve=False)
    path = dataset / df.loc[row, "uri"]
    make_image(path, size=(40, 36), color=(10, 250, 10), seed=seed, fmt="PNG")
    df.loc[row, "sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.write_manifest(df, dataset)
    return df.loc[row, "sha256"]


def test_edited_and_added_images_are_recomputed(tiny_dataset, tmp_path, mirror_env, make_image):
    cache = str(tmp_path / "cache")
    extract_features(str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=cache)
    old = load_features(str(tmp_path / "a"))[0]
    new_sha = _replace_image(tiny_dataset, 0, make_image, seed=777)
    info = extract_features(str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert (info["cache_hits"], info["cache_misses"]) == (11, 1)
    new = load_features(str(tmp_path / "b"))[0]
    row = new["sha256"].tolist().index(new_sha)
    assert new_sha not in old["sha256"].tolist()
    assert not any(np.allclose(new["features"][row], vec) for vec in old["features"])  # not served stale
    # an added image: one more miss, the rest hit
    df = manifest.read_manifest(tiny_dataset, resolve=False)
    extra = make_image(tiny_dataset / "images" / "dog" / "extra.png", size=(40, 36), seed=4242, fmt="PNG")
    added = {
        **df.iloc[0].to_dict(),
        "uri": "images/dog/extra.png",
        "label": "dog",
        "sha256": hashlib.sha256(extra.read_bytes()).hexdigest(),
        "group": "extra",
    }
    manifest.write_manifest(pd.concat([df, pd.DataFrame([added])], ignore_index=True), tiny_dataset)
    info = extract_features(str(tiny_dataset), str(tmp_path / "c"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert (info["n_images"], info["cache_hits"], info["cache_misses"]) == (13, 12, 1)


def test_image_edited_behind_the_manifest_is_refused(tiny_dataset, tmp_path, mirror_env, make_image):
    cache = str(tmp_path / "cache")
    extract_features(str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=cache)
    df = manifest.read_manifest(tiny_dataset)
    make_image(Path(df["uri"].iloc[3]), size=(40, 36), seed=555, fmt="PNG")
    with pytest.raises(BakeoffError, match="changed since ingest"):
        extract_features(str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=cache)


def test_key_changes_with_size_weights_and_cut(tiny_dataset, tmp_path, mirror_env):
    from bakeoff.features import cache_key
    from bakeoff.weights import resolve_weights

    pretrained = resolve_weights("mobilenet_v2", "imagenet")
    keys = {
        cache_key("mobilenet_v2", pretrained, 32, None)[0],
        cache_key("mobilenet_v2", pretrained, 40, None)[0],
        cache_key("mobilenet_v2", resolve_weights("mobilenet_v2", "none"), 32, None)[0],
        cache_key("mobilenet_v2", pretrained, 32, "block_13_expand_relu")[0],
        cache_key("mobilenet_v3_small", resolve_weights("mobilenet_v3_small", "none"), 32, None)[0],
        cache_key("mobilenet_v2", pretrained, 32, None, "bfloat16")[0],
    }
    assert len(keys) == 6
    assert cache_key("mobilenet_v2", pretrained, 32, None, "float32") == cache_key("mobilenet_v2", pretrained, 32, None)
    assert cache_key("mobilenet_v2", pretrained, 32, None) == cache_key("mobilenet_v2", pretrained, 32, None)
    cache = str(tmp_path / "cache")
    base = extract_features(str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=cache)
    cut = extract_features(
        str(tiny_dataset),
        str(tmp_path / "d"),
        "mobilenet_v2",
        image_size=32,
        cut="block_6_project_BN",  # not a tap: the first extraction did not fill its cache
        cache_uri=cache,
    )
    assert base["cache_key"] != cut["cache_key"] and cut["cache_misses"] == 12 and cut["feature_dim"] == 64


def test_s3_cache_and_s3_output(tiny_dataset, tmp_path, mirror_env, s3_server):
    cache = "s3://bakeoff-test/feature-cache"
    first = extract_features(
        str(tiny_dataset), "s3://bakeoff-test/out/f1", "mobilenet_v2", image_size=32, cache_uri=cache
    )
    assert first["cache_misses"] == 12 and first["cache_uri"].startswith(cache)
    assert any(f.relpath.endswith(".npz") for f in storage.list_files(cache))
    again = extract_features(str(tiny_dataset), str(tmp_path / "f2"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert (again["cache_hits"], again["cache_misses"]) == (12, 0)
    remote, info = load_features("s3://bakeoff-test/out/f1")
    np.testing.assert_array_equal(remote["features"], load_features(str(tmp_path / "f2"))[0]["features"])
    assert info["n_images"] == 12


def test_cli_features_and_errors(tiny_dataset, tmp_path, mirror_env, capsys):
    from bakeoff.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "features",
            str(tiny_dataset),
            "--out",
            str(out),
            "--backbone",
            "vgg16",
            "--weights",
            "hed",
            "--image-size",
            "32",
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0 and "12 images" in capsys.readouterr().out
    assert json.loads((out / "features.json").read_text())["weights"]["name"] == "hed"
    assert main(["features", str(tiny_dataset), "--out", str(out), "--backbone", "alexnet"]) == 2
    assert "unknown backbone 'alexnet'" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "nothing"), "--out", str(out), "--weights", "none"]) == 2
    assert "no manifest" in capsys.readouterr().err


def _fashion_dataset(root: Path, x_train, y_train, x_test, y_test) -> Path:
    images = [*x_train, *x_test]
    labels = [str(y) for y in (*y_train, *y_test)]
    return write_dataset(root, images, labels, ["train"] * len(x_train) + ["test"] * len(x_test))


def test_imported_weights_beat_random_weights_on_fashion_mnist(fashion_mnist_subset, tmp_path, mirror_env):
    """Real pretrained signal: a linear probe on frozen features, imported ImageNet weights against random init.

    Measured here (30 train images per class, 1,000 test images, 96 px): ImageNet 0.795, random init 0.696-0.724
    over three seeds. The comparison is paired (the same test images) and one-sided, through the gate's own
    McNemar test, so a real gap is told from noise; the old 600/300 split at 64 px had a 3-point gap that one
    machine's thread timing could erase.
    """
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bakeoff.stats import paired_test

    dataset = _fashion_dataset(tmp_path / "fmnist", *fashion_mnist_subset)
    correct = {}
    for spec in ("imagenet", "none"):
        keras.utils.set_random_seed(0)  # the random-init network is the same every run
        extract_features(
            str(dataset),
            str(tmp_path / spec),
            "mobilenet_v2",
            spec,
            image_size=96,
            batch_size=64,
            cache_uri=str(tmp_path / "cache"),
        )
        arrays, _ = load_features(str(tmp_path / spec))
        train, test = arrays["split"] == "train", arrays["split"] == "test"
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(arrays["features"][train], arrays["label"][train])
        correct[spec] = clf.predict(arrays["features"][test]) == arrays["label"][test]
    result = paired_test(correct["imagenet"], correct["none"], test="mcnemar")
    # chance is 0.1; standardised random conv features are a strong baseline on Fashion-MNIST (0.70-0.72 here)
    assert result.n == 1000 and result.accuracy_challenger > 0.72, result
    assert result.delta >= 0.03 and result.p_value < 1e-3, result


def _features_folder(root: Path) -> Path:
    """A features folder as `bakeoff features` writes it (real npz, no pickle), without running a backbone."""
    rng = np.random.default_rng(0)
    n = 12
    root.mkdir(parents=True)
    np.savez(
        root / "features.npz",
        sha256=np.asarray([f"{i:064x}" for i in range(n)], dtype="<U64"),
        split=np.asarray(["train", "train", "val", "test"] * 3, dtype="<U5"),
        label=np.asarray(["cat", "dog"] * 6),
        features=rng.normal(size=(n, 8)).astype(np.float32),
    )
    (root / "features.json").write_text(json.dumps({"backbone": "mobilenet_v2", "classes": ["cat", "dog"]}))
    return root


@pytest.mark.parametrize("damage", ["half", "most", "empty", "flipped"])
def test_truncated_features_npz_is_a_one_line_error_naming_it(tmp_path, capsys, damage):
    """Cut short (to half, 90 %, nothing) or with a flipped byte in an array: the file is named, never a
    BadZipFile or EOFError traceback."""
    from bakeoff.cli import main

    folder = _features_folder(tmp_path / "feat")
    assert load_features(str(folder))[0]["features"].shape == (12, 8)
    npz = folder / "features.npz"
    data = bytearray(npz.read_bytes())
    if damage == "flipped":
        data[data.index(b"features.npy") + 200] ^= 0xFF  # inside the float array: its CRC no longer matches
    else:
        data = data[: int(len(data) * {"half": 0.5, "most": 0.9, "empty": 0.0}[damage])]
    npz.write_bytes(bytes(data))
    with pytest.raises(BakeoffError) as info:
        load_features(str(folder))
    message = str(info.value)
    assert message.startswith(f"{npz} is damaged (") and "\n" not in message
    assert message.endswith("re-run `bakeoff features` to write it again")
    assert main(["train-head", str(folder), "--out", str(tmp_path / "head"), "--kind", "logreg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {npz} is damaged") and "\n" not in err


def test_bfloat16_vectors_are_close_cached_apart_and_recorded(tiny_dataset, tmp_path, mirror_env):
    """bfloat16 arithmetic changes vectors a little (never stored under float32's key); the info says which ran."""
    cache = str(tmp_path / "cache")
    f32 = extract_features(
        str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=cache, precision="float32"
    )
    bf16 = extract_features(
        str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=cache, precision="bfloat16"
    )
    assert (f32["precision"], bf16["precision"]) == ("float32", "bfloat16")
    assert bf16["cache_misses"] == 12 and bf16["cache_key"] != f32["cache_key"]
    a, b = (load_features(str(tmp_path / x))[0]["features"] for x in "ab")
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    # bfloat16 keeps ~3 significant digits; errors add up over 50+ layers to a few % of a vector, same direction
    assert np.abs(a - b).mean() < 0.15 * np.abs(a).mean() and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # the policy is restored
    with pytest.raises(BakeoffError, match="--precision must be one of auto, float32, bfloat16"):
        extract_features(str(tiny_dataset), str(tmp_path / "c"), "mobilenet_v2", image_size=32, precision="half")


def test_auto_precision_is_bfloat16_only_where_measured_faster(monkeypatch):
    """auto: bfloat16 for a backbone measured faster in it (VGG16), on a CPU with AVX512-BF16/AMX, without a GPU."""
    from bakeoff import backbones, features

    flags = Path("/proc/cpuinfo").read_text().split()
    assert features.cpu_has_bfloat16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    monkeypatch.setattr(backbones, "gpu_visible", lambda: False)
    monkeypatch.setattr(features, "cpu_has_bfloat16", lambda: True)
    assert features.resolve_precision("auto", "vgg16") == "bfloat16"
    assert features.resolve_precision("auto", "mobilenet_v2") == "float32"  # measured slower in bfloat16
    assert features.resolve_precision("float32", "vgg16") == "float32"
    monkeypatch.setattr(features, "cpu_has_bfloat16", lambda: False)
    assert features.resolve_precision("auto", "vgg16") == "float32"
    assert features.resolve_precision("bfloat16", "mobilenet_v2") == "bfloat16"  # asked for: honoured
    monkeypatch.setattr(features, "cpu_has_bfloat16", lambda: True)
    monkeypatch.setattr(backbones, "gpu_visible", lambda: True)
    assert features.resolve_precision("auto", "vgg16") == "float32"


def _png(pixels: np.ndarray) -> bytes:
    """The bytes support.write_dataset stores for these pixels (its file name is their sha256)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_flip_features_are_the_mirrored_images_vectors_cached_apart(make_tiny_dataset, tmp_path, mirror_env):
    """``flip`` adds, for the top and each tap, the vectors of the left-right mirrored image: the same numbers as a
    dataset whose files ARE mirrored, under cache keys of their own; a rerun computes nothing."""
    from PIL import Image

    dataset = make_tiny_dataset(tmp_path / "d", size=(32, 32))  # no resize: mirroring commutes exactly
    cache, tap = str(tmp_path / "cache"), "tap_block_13_expand_relu"
    info = extract_features(
        str(dataset), str(tmp_path / "f"), "mobilenet_v2", image_size=32, cache_uri=cache, flip=True
    )
    arrays, _ = load_features(str(tmp_path / "f"))
    assert info["flip"] is True and info["forward_images"] == 24 and info["cache_misses"] == 12
    assert arrays["flip_features"].shape == arrays["features"].shape and arrays[f"flip_{tap}"].shape == (12, 576)
    assert not np.allclose(arrays["flip_features"], arrays["features"])  # the images are not symmetric

    df = manifest.read_manifest(dataset)
    mirrored = [np.asarray(Image.open(uri).convert("RGB"))[:, ::-1] for uri in df["uri"]]
    twin = write_dataset(tmp_path / "m", mirrored, df["label"], df["split"])
    extract_features(str(twin), str(tmp_path / "t"), "mobilenet_v2", image_size=32, cache_uri=cache)
    twin_arrays, _ = load_features(str(tmp_path / "t"))
    # the twin's manifest is sorted by its own sha256s: line its rows up with the originals
    order = [twin_arrays["sha256"].tolist().index(hashlib.sha256(_png(m)).hexdigest()) for m in mirrored]
    np.testing.assert_allclose(arrays["flip_features"], twin_arrays["features"][order], atol=1e-4)
    np.testing.assert_allclose(arrays[f"flip_{tap}"], twin_arrays[tap][order], atol=1e-4)

    keys = {json.dumps(json.loads(p.read_text()), sort_keys=True) for p in Path(cache).glob("*/key.json")}
    assert sum('"flip": "horizontal"' in k for k in keys) == 2  # top and tap, flipped, each under its own key
    again = extract_features(
        str(dataset), str(tmp_path / "g"), "mobilenet_v2", image_size=32, cache_uri=cache, flip=True
    )
    assert (again["forward_images"], again["cache_hits"]) == (0, 12)
    np.testing.assert_array_equal(load_features(str(tmp_path / "g"))[0]["flip_features"], arrays["flip_features"])
    plain = extract_features(str(dataset), str(tmp_path / "p"), "mobilenet_v2", image_size=32, cache_uri=cache)
    assert plain["forward_images"] == 0 and "flip_features" not in load_features(str(tmp_path / "p"))[0]


def test_extra_sizes_add_every_array_at_each_size_from_that_sizes_cache(tiny_dataset, tmp_path, mirror_env):
    """``extra_sizes`` stores ``s<size>_<array>``: the same vectors a plain extraction at that size gives (its
    cache is shared: that extraction is all hits)."""
    cache, tap = str(tmp_path / "cache"), "tap_block_13_expand_relu"
    kwargs = {"image_size": 32, "cache_uri": cache}
    info = extract_features(str(tiny_dataset), str(tmp_path / "f"), "mobilenet_v2", extra_sizes=[48, 32], **kwargs)
    arrays, _ = load_features(str(tmp_path / "f"))
    assert info["extra_image_sizes"] == [48] and info["image_size"] == 32 and info["forward_images"] == 24
    assert arrays["s48_features"].shape == (12, 1280) and arrays[f"s48_{tap}"].shape == (12, 576)
    assert not np.allclose(arrays["s48_features"], arrays["features"])
    at48 = extract_features(str(tiny_dataset), str(tmp_path / "g"), "mobilenet_v2", image_size=48, cache_uri=cache)
    assert at48["forward_images"] == 0
    np.testing.assert_array_equal(load_features(str(tmp_path / "g"))[0]["features"], arrays["s48_features"])
    with pytest.raises(BakeoffError, match="extra image sizes >= 32, got 16"):
        extract_features(str(tiny_dataset), str(tmp_path / "h"), "mobilenet_v2", extra_sizes=[16], **kwargs)
