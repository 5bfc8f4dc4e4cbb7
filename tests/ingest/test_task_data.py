"""`bakeoff demo-data --source digits`: the second task (scikit-learn's real handwritten digits) as a raw dump."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from bakeoff import task_data
from bakeoff.cli import main
from bakeoff.ingest import ingest

from support import tree_hashes


def test_digits_dump_is_real_upscaled_digits_deterministic_and_prunes_its_own(tmp_path, capsys):
    argv = ["demo-data", "--source", "digits", "--per-class", "5", "--classes", "zero,one,otto"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "wrote 15 images in 3 classes" in capsys.readouterr().out
    raw = tmp_path / "a" / "raw-img"
    assert sorted(p.name for p in raw.iterdir()) == ["otto", "uno", "zero"]
    assert json.loads((tmp_path / "a" / "translate.json").read_text()) == {
        "zero": "zero",
        "uno": "one",
        "otto": "eight",
    }
    pixels, labels = task_data.load_digits_images()
    originals = {int(d): pixels[labels == d].astype(np.float32) for d in (0, 1, 8)}
    formats = set()
    for digit, folder in ((0, "zero"), (1, "uno"), (8, "otto")):
        files = sorted((raw / folder).iterdir())
        assert len(files) == 5
        for path in files:
            with Image.open(path) as img:
                formats.add(img.format)
                assert img.size == (64, 64) and img.mode == "L"
                small = np.asarray(img.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
            # each file is one of its class's real scans (upscaled, maybe JPEG'd), not another class's
            distance = {d: np.abs(o - small).mean(axis=(1, 2)).min() for d, o in originals.items()}
            assert min(distance, key=distance.get) == digit and distance[digit] < 25, (path, distance)
    assert formats == {"JPEG", "PNG"}

    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")  # same seed, same bytes
    assert main([*argv[:4], "3", *argv[5:], "--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b" / "raw-img" / "otto").iterdir())) == 3  # a smaller re-run prunes its own


def test_digits_dump_ingests_cleanly_and_refuses_bad_input(tmp_path, capsys):
    made = task_data.make_digits_data(str(tmp_path / "digits"), per_class=12)
    result = ingest(made.raw_dir, str(tmp_path / "ds"), label_map=made.label_map, progress=False)
    card = result.card
    assert card["classes"] == sorted(en for _, en in task_data.DIGIT_CLASSES) and result.n_images == 120
    assert sum(card["rejected"].values()) == 0 and card["exact_duplicates"] == 0
    assert card["near_duplicates"]["groups_merged"] == 0  # different people's digits are never merged

    (tmp_path / "mine" / "raw-img").mkdir(parents=True)
    (tmp_path / "mine" / "raw-img" / "photo.jpg").write_bytes(b"the user's")
    for extra, message in (
        (["--per-class", "175", "--out", str(tmp_path / "c")], "more than the 174 images of otto"),
        (["--source", "cifar", "--out", str(tmp_path / "c")], "unknown --source 'cifar'"),
        (["--out", str(tmp_path / "mine")], "that bakeoff digits-data did not write"),
    ):
        argv = ["demo-data", "--source", "digits", *extra] if extra[0] != "--source" else ["demo-data", *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert (tmp_path / "mine" / "raw-img" / "photo.jpg").read_bytes() == b"the user's"
    assert not (tmp_path / "c").exists()  # refused before anything was written
