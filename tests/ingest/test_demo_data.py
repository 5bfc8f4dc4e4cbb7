"""`bakeoff demo-data`: real Fashion-MNIST as a messy raw dump, and ingest's view of it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bakeoff import demo_data
from bakeoff.cli import main
from bakeoff.ingest import ingest
from bakeoff.manifest import read_manifest

from support import tree_hashes

pytestmark = pytest.mark.skipif(
    not (demo_data.FASHION_MNIST_DIR / demo_data.IMAGES_FILE).exists(),
    reason="needs Debian's dataset-fashion-mnist (make apt-runtime)",
)


def test_demo_data_layout_and_determinism(tmp_path, capsys):
    assert (
        main(["demo-data", "--out", str(tmp_path / "a"), "--per-class", "6", "--classes", "maglietta,trouser,borsa"])
        == 0
    )
    assert "wrote 18 images in 3 classes" in capsys.readouterr().out
    raw = tmp_path / "a" / "raw-img"
    assert sorted(p.name for p in raw.iterdir() if p.is_dir()) == ["borsa", "maglietta", "pantaloni"]
    assert json.loads((tmp_path / "a" / "translate.json").read_text()) == {
        "maglietta": "tshirt",
        "pantaloni": "trouser",
        "borsa": "bag",
    }
    files = [p for p in raw.rglob("*") if p.is_file()]
    formats, modes = set(), set()
    for p in files:
        if p.stat().st_size and p.name not in (".DS_Store", "leggimi.jpg", "troncato.jpeg"):
            with Image.open(p) as img:
                formats.add(img.format)
                modes.add(img.mode)
    assert formats == {"JPEG", "PNG"} and modes == {"L", "RGB"}
    for name in (
        "maglietta/vuoto.jpg",
        "maglietta/troncato.jpeg",
        "pantaloni/leggimi.jpg",
        ".DS_Store",
        "senza_cartella.png",
    ):
        assert (raw / name).exists(), name
    main(["demo-data", "--out", str(tmp_path / "b"), "--per-class", "6", "--classes", "maglietta,trouser,borsa"])
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")  # same seed, same bytes
    main(["demo-data", "--out", str(tmp_path / "b"), "--per-class", "4", "--classes", "maglietta,trouser,borsa"])
    assert len(list((tmp_path / "b" / "raw-img" / "borsa").iterdir())) == 4  # stale files replaced


def test_ingest_of_demo_data_finds_every_planted_problem(tmp_path):
    made = demo_data.make_demo_data(str(tmp_path / "demo"), per_class=8, classes="maglietta,pantaloni,borsa,scarpa")
    result = ingest(made.raw_dir, str(tmp_path / "ds"), label_map=made.label_map, progress=False)
    card = result.card
    assert card["classes"] == ["bag", "sneaker", "trouser", "tshirt"]
    assert card["rejected"] == {"duplicate-of": 1, "not-an-image": 1, "truncated": 1, "unlabelled": 1, "zero-byte": 1}
    assert card["ignored_litter"] == 2 and card["exact_duplicates"] == 1
    # exactly the planted near-duplicate is merged: different garments are never grouped
    assert card["near_duplicates"]["groups_merged"] == 1
    df = read_manifest(tmp_path / "ds")
    df["name"] = [Path(s).name for s in df["source"]]
    merged = df[df["group"].duplicated(keep=False)]
    assert "quasi_uguale.jpg" in set(merged["name"]) and len(merged) == 2 and merged["split"].nunique() == 1
    assert result.n_images == 4 * 8 + 1  # + the near-duplicate copy, which is a real (grouped) image
    names = sorted(Path(u).name for u in pd.read_csv(tmp_path / "ds" / "rejected.csv")["uri"])
    copies = [n for n in names if n.startswith("copia_")]
    assert len(copies) == 1
    assert sorted(set(names) - set(copies)) == ["leggimi.jpg", "senza_cartella.png", "troncato.jpeg", "vuoto.jpg"]
    # the whole demo folder (raw-img/ beside translate.json) gives the same dataset
    whole = ingest(str(tmp_path / "demo"), str(tmp_path / "ds_whole"), label_map=made.label_map, progress=False)
    assert whole.card["dataset_hash"] == card["dataset_hash"]
    assert whole.card["rejected"]["unlabelled"] == 2  # + translate.json at the top level


@pytest.mark.slow
def test_demo_default_size_merges_only_the_planted_near_duplicate(tmp_path):
    """All 10 classes x 300 garments: the near-duplicate threshold must not merge different garments."""
    made = demo_data.make_demo_data(str(tmp_path / "demo"), per_class=300)
    result = ingest(made.raw_dir, str(tmp_path / "ds"), label_map=made.label_map, progress=False)
    assert result.card["near_duplicates"]["groups_merged"] == 1
    assert result.n_images == 3001
