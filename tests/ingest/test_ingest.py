"""bakeoff.ingest on local folders: outputs, rejections, duplicates, near-duplicates, options, determinism."""

from __future__ import annotations

import gc
import hashlib
import json
import random
import shutil
import weakref
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bakeoff import images, manifest
from bakeoff.errors import BakeoffError
from bakeoff.ingest import ingest
from bakeoff.manifest import read_manifest

from support import encode, exif_jpeg, photo


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_outputs_schema_and_self_contained_folder(tmp_path, make_dump):
    raw = tmp_path / "raw"
    made = make_dump(raw / "raw-img", {"cane": 7, "gatto": 7})
    out = tmp_path / "ds"
    result = ingest(str(raw), str(out), progress=False)

    assert {"manifest.parquet", "rejected.csv", "card.json", "card.md"} <= {p.name for p in out.iterdir()}
    raw_df = pd.read_parquet(out / "manifest.parquet")
    assert list(raw_df.columns) == list(manifest.COLUMNS)
    assert len(raw_df) == 14 == result.n_images
    for row in raw_df.itertuples():
        assert not Path(row.uri).is_absolute()
        assert row.uri == f"images/{row.label}/{row.sha256}.png"
        data = (out / row.uri).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256  # plain RGB PNG: the bytes are copied as they are
        assert (row.width, row.height) == (32, 32)
        assert Path(row.source).exists() and Path(row.source).parent.name == row.label
    assert set(raw_df["label"]) == {"cane", "gatto"}
    # split sizes per class follow 70/15/15 on 7 images: 5/1/1
    for label in ("cane", "gatto"):
        counts = raw_df[raw_df["label"] == label]["split"].value_counts().to_dict()
        assert counts == {"train": 5, "val": 1, "test": 1}
    # the folder moves: URIs stay valid relative to the manifest
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    df = read_manifest(moved)
    assert all(Path(u).exists() for u in df["uri"])
    card = json.loads((moved / "card.json").read_text())
    assert card["counts"]["cane"] == {"train": 5, "val": 1, "test": 1, "total": 7}
    assert card["n_rejected"] == 0 and card["files_seen"] == sum(len(v) for v in made.values())
    assert "| cane | 5 | 1 | 1 | 7 |" in (moved / "card.md").read_text()
    assert (moved / "rejected.csv").read_text() == "uri,reason\n"


def _reasons(out: Path) -> dict[str, str]:
    df = pd.read_csv(out / "rejected.csv")
    return {Path(u).name: r for u, r in zip(df["uri"], df["reason"])}


def test_every_bad_kind_is_rejected_with_a_reason_and_the_run_goes_on(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 4, "gatto": 4})
    chelsea = encode(photo("chelsea"), "JPEG", quality=90)
    (raw / "cane" / "zero.jpg").write_bytes(b"")
    (raw / "cane" / "notes.jpg").write_text("not an image\n")
    (raw / "cane" / "half.jpg").write_bytes(chelsea[: len(chelsea) // 2])
    corrupt = bytearray(encode(photo("coffee").resize((64, 48))))
    at = corrupt.index(b"IDAT")
    corrupt[at + 40 : at + 240] = bytes(200)
    (raw / "gatto" / "corrupt.png").write_bytes(bytes(corrupt))
    big = encode(Image.new("L", (3000, 2000)))  # 6 MP, small file
    (raw / "gatto" / "huge.png").write_bytes(big)
    (raw / "loose.png").write_bytes(encode(photo("coffee").resize((40, 30))))
    out = tmp_path / "ds"
    result = ingest(str(raw), str(out), progress=False, max_pixels=5_000_000)

    reasons = _reasons(out)
    assert reasons["zero.jpg"] == "zero-byte"
    assert reasons["notes.jpg"] == "not-an-image"
    assert reasons["half.jpg"].startswith("truncated")
    assert reasons["corrupt.png"].split(":")[0] in {"corrupt", "truncated"}
    assert reasons["huge.png"] == "decompression-bomb: 3000x2000 px > limit of 5000000 px"
    assert reasons["loose.png"] == "unlabelled: file at top level (put it in a class folder)"
    assert result.n_images == 8
    card = result.card
    assert card["n_rejected"] == 6 and sum(card["rejected"].values()) == 6
    assert card["rejected"]["zero-byte"] == 1 and card["rejected"]["unlabelled"] == 1
    assert not list((out / "images").rglob("*.jpg"))  # nothing rejected was materialised


def test_os_litter_and_hidden_files_are_ignored_not_rejected(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 3, "gatto": 3})
    junk = encode(photo("coffee").resize((40, 30)))  # even a real image is litter in these places
    for rel in (
        ".DS_Store",
        "cane/.DS_Store",
        "cane/Thumbs.db",
        "gatto/desktop.ini",
        "cane/._img0000.png",
        "__MACOSX/cane/._x.png",
        ".hidden/cane/x.png",
        "gatto/.secret.png",
    ):
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(junk)
    result = ingest(str(raw), str(tmp_path / "ds"), progress=False)
    assert result.card["ignored_litter"] == 8
    assert result.n_rejected == 0 and result.n_images == 6
    assert set(read_manifest(tmp_path / "ds")["label"]) == {"cane", "gatto"}


def test_exif_rotated_jpeg_is_materialised_as_rotated_png(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 3, "gatto": 3})
    data = exif_jpeg(6)
    (raw / "cane" / "rotated.jpg").write_bytes(data)
    ingest(str(raw), str(tmp_path / "ds"), progress=False)
    df = read_manifest(tmp_path / "ds")
    row = df[df["sha256"] == hashlib.sha256(data).hexdigest()].iloc[0]
    assert (row.width, row.height) == (20, 40)
    assert row.uri.endswith(f"{row.sha256}.png")
    stored = Image.open(row.uri)
    assert stored.format == "PNG" and stored.size == (20, 40)
    assert stored.getpixel((10, 5))[0] > 200 and stored.getpixel((10, 35))[2] > 200


def test_other_modes_are_materialised_as_rgb_png(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 3, "gatto": 3})
    base = photo("coffee").resize((48, 32))
    (raw / "cane" / "cmyk.jpg").write_bytes(encode(base.convert("CMYK"), "JPEG"))
    (raw / "cane" / "palette.png").write_bytes(encode(base.convert("P")))
    (raw / "gatto" / "alpha.png").write_bytes(encode(base.rotate(90).resize((48, 32)).convert("RGBA")))
    (raw / "gatto" / "grey.jpg").write_bytes(encode(photo("astronaut").resize((48, 32)).convert("L"), "JPEG"))
    ingest(str(raw), str(tmp_path / "ds"), progress=False)
    df = read_manifest(tmp_path / "ds")
    by_source = {Path(s).name: u for s, u in zip(df["source"], df["uri"])}
    for name in ("cmyk.jpg", "palette.png", "alpha.png"):
        stored = Image.open(by_source[name])
        assert stored.format == "PNG" and stored.mode == "RGB", name
    grey = Image.open(by_source["grey.jpg"])
    assert grey.format == "JPEG" and grey.mode == "L"  # plain grey JPEG: TensorFlow reads it as is


def test_exact_duplicates_kept_once_and_label_conflicts_rejected(tmp_path, make_dump):
    raw = tmp_path / "raw"
    made = make_dump(raw, {"cane": 3, "gatto": 3, "ragno": 3})
    shutil.copy(made["cane"][0], raw / "cane" / "z_copy1.png")
    shutil.copy(made["cane"][0], raw / "cane" / "z_copy2.png")
    shutil.copy(made["gatto"][0], raw / "ragno" / "same_as_a_gatto.png")
    coffee = encode(photo("coffee").resize((40, 30)))
    for label in ("cane", "gatto", "ragno"):  # so every class still has 3 images to split
        (raw / label / "extra.png").write_bytes(
            encode(photo("astronaut").resize((30, 30)).rotate({"cane": 0, "gatto": 90, "ragno": 180}[label]))
        )
    (raw / "cane" / "coffee.png").write_bytes(coffee)
    result = ingest(str(raw), str(tmp_path / "ds"), progress=False)

    df = read_manifest(tmp_path / "ds")
    assert df["sha256"].is_unique
    assert result.card["exact_duplicates"] == 2
    conflict_sha = hashlib.sha256(made["gatto"][0].read_bytes()).hexdigest()
    assert conflict_sha not in set(df["sha256"])
    reasons = _reasons(tmp_path / "ds")
    assert reasons["same_as_a_gatto.png"] == "label-conflict: same content labelled gatto and ragno"
    assert reasons[made["gatto"][0].name] == "label-conflict: same content labelled gatto and ragno"
    assert reasons["z_copy1.png"] == reasons["z_copy2.png"] == f"duplicate-of: {made['cane'][0]}"
    assert result.card["rejected"] == {"duplicate-of": 2, "label-conflict": 2}


def test_near_duplicates_grouped_and_never_straddle_splits(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"gatto": 6, "altro": 6})
    chelsea = photo("chelsea")
    (raw / "gatto" / "chelsea.png").write_bytes(encode(chelsea))
    (raw / "gatto" / "chelsea_small.jpg").write_bytes(encode(chelsea.resize((200, 133)), "JPEG", quality=60))
    (raw / "gatto" / "chelsea_q60.jpg").write_bytes(encode(chelsea, "JPEG", quality=60))
    for name in ("coffee", "astronaut", "china.jpg", "flower.jpg"):
        (raw / "altro" / f"{name}.png").write_bytes(encode(photo(name).resize((160, 120))))
    for seed in range(10):  # the same split must hold for any seed, not just a lucky one
        result = ingest(str(raw), str(tmp_path / "ds"), progress=False, seed=seed)
        df = read_manifest(tmp_path / "ds")
        df["name"] = [Path(s).name for s in df["source"]]
        cats = df[df["name"].str.startswith("chelsea")]
        assert cats["group"].nunique() == 1 and cats["split"].nunique() == 1
        assert cats["group"].iloc[0] == min(cats["sha256"])
        others = df[~df["name"].str.startswith("chelsea")]
        assert others["group"].is_unique and (others["group"] == others["sha256"]).all()
        assert result.card["near_duplicates"]["groups_merged"] == 1
        assert result.card["near_duplicates"]["images_in_merged_groups"] == 3
        assert df.groupby("group")["split"].nunique().max() == 1


def _signature(out: Path) -> list[tuple[str, str, str]]:
    df = read_manifest(out)
    return sorted(zip(df["sha256"], df["label"], df["split"]))


def test_split_is_deterministic_whatever_the_file_order_names_and_folder(tmp_path, make_dump):
    made = make_dump(tmp_path / "first" / "raw-img", {"cane": 12, "gatto": 9, "ragno": 8})
    # the same bytes, written in shuffled order under other file names, two levels deeper
    files = [(label, p) for label, paths in made.items() for p in paths]
    random.Random(7).shuffle(files)
    for i, (label, path) in enumerate(files):
        target = tmp_path / "second" / "x" / "data" / label / f"renamed_{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    a = ingest(str(tmp_path / "first"), str(tmp_path / "out_a"), progress=False, seed=3)
    b = ingest(str(tmp_path / "second"), str(tmp_path / "out_b"), progress=False, seed=3)
    assert _signature(tmp_path / "out_a") == _signature(tmp_path / "out_b")
    assert a.card["dataset_hash"] == b.card["dataset_hash"]
    assert _files_under(tmp_path / "out_a" / "images") == _files_under(tmp_path / "out_b" / "images")
    c = ingest(str(tmp_path / "first"), str(tmp_path / "out_c"), progress=False, seed=4)
    assert c.card["dataset_hash"] != a.card["dataset_hash"]  # the seed matters
    counts = pd.DataFrame(_signature(tmp_path / "out_c"), columns=["sha", "label", "split"])
    assert counts.groupby("label")["split"].value_counts().loc["cane"].to_dict() == {"train": 8, "val": 2, "test": 2}


def test_rerun_into_same_folder_is_idempotent_and_drops_stale_images(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 4, "gatto": 4, "ragno": 4})
    out = tmp_path / "ds"
    ingest(str(raw), str(out), progress=False)
    first = {name: (out / name).read_bytes() for name in ("manifest.parquet", "rejected.csv", "card.json", "card.md")}
    ingest(str(raw), str(out), progress=False)
    assert {name: (out / name).read_bytes() for name in first} == first
    ingest(str(raw), str(out), progress=False, classes="cane,gatto")
    assert {p.name for p in (out / "images").iterdir()} == {"cane", "gatto"}
    assert _files_under(out / "images") == {
        u[len("images/") :] for u in read_manifest(out)["uri"].map(lambda u: Path(u).relative_to(out).as_posix())
    }
    assert not list(out.rglob("*.tmp"))


def test_label_map_json_and_yaml_classes_and_excluded_counts(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw / "raw-img", {"cane": 4, "cavallo": 4, "gatto": 3, "dog": 3})
    (tmp_path / "map.json").write_text(json.dumps({"cane": "dog", "cavallo": "horse", "gatto": "cat"}))
    (tmp_path / "map.yaml").write_text("cane: dog\ncavallo: horse\ngatto: cat\nunused: nothing\n")
    for name in ("map.json", "map.yaml"):
        out = tmp_path / f"ds_{name}"
        result = ingest(str(raw), str(out), progress=False, label_map=str(tmp_path / name), classes=["dog", "horse"])
        df = read_manifest(out)
        assert df["label"].value_counts().to_dict() == {"dog": 7, "horse": 4}  # cane + dog folders merge
        assert result.card["excluded_by_classes"] == {"cat": 3}
        assert {p.name for p in (out / "images").iterdir()} == {"dog", "horse"}
    assert result.card["label_map_unused"] == ["unused"]
    dict_result = ingest(str(raw), str(tmp_path / "ds_dict"), progress=False, label_map={"cane": "dog"})
    assert dict_result.card["classes"] == ["cavallo", "dog", "gatto"]


def test_per_class_cap_is_deterministic_and_content_based(tmp_path, make_dump):
    made = make_dump(tmp_path / "a", {"cane": 10, "gatto": 6})
    for label, paths in made.items():  # same content, other names
        for i, path in enumerate(reversed(paths)):
            (tmp_path / "b" / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / "b" / label / f"z{i}.png")
    ra = ingest(str(tmp_path / "a"), str(tmp_path / "oa"), progress=False, per_class=5, seed=1)
    rb = ingest(str(tmp_path / "b"), str(tmp_path / "ob"), progress=False, per_class=5, seed=1)
    assert read_manifest(tmp_path / "oa")["label"].value_counts().to_dict() == {"cane": 5, "gatto": 5}
    assert _signature(tmp_path / "oa") == _signature(tmp_path / "ob")
    assert ra.card["capped_by_per_class"] == {"cane": 5, "gatto": 1} == rb.card["capped_by_per_class"]
    rc = ingest(str(tmp_path / "a"), str(tmp_path / "oc"), progress=False, per_class=5, seed=2)
    assert {s for s, _, _ in _signature(tmp_path / "oc")} != {s for s, _, _ in _signature(tmp_path / "oa")}
    assert rc.n_images == 10


def test_labels_csv_overrides_folders(tmp_path, make_dump):
    made = make_dump(tmp_path / "flat", {"unsorted": 8})
    lines = ["path,label"] + [
        f"unsorted/{p.name},{'dog' if i % 2 else 'horse'}" for i, p in enumerate(made["unsorted"][:7])
    ]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = ingest(
        str(tmp_path / "flat"),
        str(tmp_path / "ds"),
        progress=False,
        labels_csv=str(tmp_path / "labels.csv"),
        val=0.2,
        test=0.2,
    )
    assert read_manifest(tmp_path / "ds")["label"].value_counts().to_dict() == {"horse": 4, "dog": 3}
    assert _reasons(tmp_path / "ds") == {made["unsorted"][7].name: "unlabelled: not listed in the labels CSV"}
    assert result.n_images == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val": 0.5, "test": 0.5}, "must be >= 0 and add up to less than 1"),
        ({"classes": "cane"}, "need at least 2 classes to split, found 1 ['cane']"),
        ({"classes": "cane,lupo"}, "--classes names ['lupo'] but no usable image has that label"),
        ({"per_class": 0}, "--per-class must be at least 1"),
        ({"label_map": {"cane": "a/b"}}, "cannot be a folder name"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, make_dump, kwargs, message):
    make_dump(tmp_path / "raw", {"cane": 4, "gatto": 4})
    with pytest.raises(BakeoffError) as info:
        ingest(str(tmp_path / "raw"), str(tmp_path / "ds"), progress=False, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_class_too_small_to_split_is_named(tmp_path, make_dump):
    make_dump(tmp_path / "raw", {"cane": 5, "gatto": 2})
    with pytest.raises(BakeoffError, match=r"class 'gatto' has only 2 image\(s\)"):
        ingest(str(tmp_path / "raw"), str(tmp_path / "ds"), progress=False)
    # turning the test split off makes 2 images enough
    result = ingest(str(tmp_path / "raw"), str(tmp_path / "ds"), progress=False, test=0.0, val=0.3)
    assert result.card["counts"]["gatto"] == {"train": 1, "val": 1, "test": 0, "total": 2}


def test_no_pixels_or_bytes_are_kept_after_each_file(tmp_path, make_dump, monkeypatch):
    """Memory stays O(rows): every decoded image is released; rows hold only strings, ints and a 32-byte hash."""
    make_dump(tmp_path / "raw", {"cane": 6, "gatto": 6})
    alive: list[weakref.ref] = []
    real = images.load_image

    def tracking(data, **kwargs):
        img, info = real(data, **kwargs)
        alive.append(weakref.ref(img))
        return img, info

    monkeypatch.setattr(images, "load_image", tracking)
    ingest(str(tmp_path / "raw"), str(tmp_path / "ds"), progress=False)
    gc.collect()
    assert len(alive) == 12 and all(ref() is None for ref in alive)
    from bakeoff.ingest import _Accepted

    assert set(_Accepted.__dataclass_fields__) == {
        "uri",
        "label",
        "sha256",
        "width",
        "height",
        "source",
        "phash",
        "folder",
    }


def test_a_dump_with_only_bad_files_fails_with_a_pointer_to_rejected_csv(tmp_path):
    raw = tmp_path / "raw"
    (raw / "cane").mkdir(parents=True)
    (raw / "cane" / "a.jpg").write_bytes(b"")
    (raw / "gatto").mkdir()
    (raw / "gatto" / "b.jpg").write_text("text")
    with pytest.raises(BakeoffError) as info:
        ingest(str(raw), str(tmp_path / "ds"), progress=False)
    message = str(info.value)
    assert "need at least 2 classes to split, found 0 []" in message
    assert f"2 files rejected, see {tmp_path / 'ds' / 'rejected.csv'}" in message
    assert _reasons(tmp_path / "ds") == {"a.jpg": "zero-byte", "b.jpg": "not-an-image"}


def test_near_duplicates_under_different_labels_stay_together_and_are_flagged(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw, {"gatto": 4, "cane": 4})
    chelsea = photo("chelsea")
    (raw / "gatto" / "chelsea.png").write_bytes(encode(chelsea))
    (raw / "cane" / "chelsea_small.jpg").write_bytes(encode(chelsea.resize((150, 100)), "JPEG", quality=60))
    result = ingest(str(raw), str(tmp_path / "ds"), progress=False)
    df = read_manifest(tmp_path / "ds")
    cats = df[df["source"].str.contains("chelsea")]
    assert len(cats) == 2 and cats["group"].nunique() == 1 and cats["split"].nunique() == 1
    assert result.card["near_duplicates"]["groups_with_mixed_labels"] == 1
    assert "different labels (check them): 1" in (tmp_path / "ds" / "card.md").read_text()


def test_files_beside_class_folders_are_unlabelled_at_any_depth(tmp_path, make_dump):
    raw = tmp_path / "raw"
    make_dump(raw / "data" / "raw-img", {"cane": 3, "gatto": 3})
    stray = encode(photo("coffee").resize((40, 30)))
    (raw / "data" / "raw-img" / "stray.png").write_bytes(stray)
    (raw / "data" / "readme.png").write_bytes(encode(photo("astronaut").resize((40, 30))))
    result = ingest(str(raw), str(tmp_path / "ds"), progress=False)
    assert result.card["classes"] == ["cane", "gatto"] and result.n_images == 6
    reason = "unlabelled: file beside class folders (put it in a class folder)"
    assert _reasons(tmp_path / "ds") == {"stray.png": reason, "readme.png": reason}
    assert {p.name for p in (tmp_path / "ds" / "images").iterdir()} == {"cane", "gatto"}


def test_tensorflow_reads_every_materialised_image_as_pillow_does(tmp_path, make_dump):
    """The contract with the training steps: tf.io.decode_image on a stored file gives the pixels ingest saw."""
    import numpy as np
    import tensorflow as tf

    raw = tmp_path / "raw"
    make_dump(raw, {"cane": 3, "gatto": 3})
    base = photo("coffee").resize((48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    variants = {
        "cane/cmyk.jpg": encode(base.convert("CMYK"), "JPEG", quality=95),
        "cane/palette.png": encode(base.convert("P")),
        "cane/rotated.jpg": encode(base, "JPEG", quality=95, exif=exif.tobytes()),
        "cane/sixteen.png": encode(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)),
        "gatto/alpha.png": encode(photo("astronaut").resize((48, 32)).convert("RGBA")),
        "gatto/grey.jpg": encode(photo("chelsea").resize((48, 32)).convert("L"), "JPEG", quality=95),
        "gatto/photo.webp": encode(photo("china.jpg").resize((48, 32)), "WEBP"),
        "gatto/photo.tiff": encode(photo("flower.jpg").resize((48, 32)), "TIFF"),
    }
    for rel, data in variants.items():
        (raw / rel).write_bytes(data)
    ingest(str(raw), str(tmp_path / "ds"), progress=False)
    df = read_manifest(tmp_path / "ds")
    assert len(df) == 14
    for row in df.itertuples():
        stored = Path(row.uri).read_bytes()
        pixels = tf.io.decode_image(stored, channels=3, expand_animations=False, dtype=tf.uint8).numpy()
        assert pixels.shape == (row.height, row.width, 3), row.source
        expected, _ = images.load_image(Path(row.source).read_bytes())
        diff = np.abs(pixels.astype(int) - np.asarray(expected, dtype=int)).mean()
        assert diff < 1.5, (row.source, diff)  # JPEG decoders may round differently; PNGs are exact
