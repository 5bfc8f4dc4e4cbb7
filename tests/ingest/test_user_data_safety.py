"""Issue 8 item 1: no step deletes, moves or rewrites a file it did not write.

`bakeoff ingest proj/images --out proj` once swept proj/images (the source) and deleted every original it did not
keep. Each test snapshots the user's files (path -> sha256) before a step and checks them byte for byte after it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bakeoff import demo_data, write_record
from bakeoff.cli import main
from bakeoff.errors import BakeoffError
from bakeoff.ingest import RECORD_NAME, ingest
from bakeoff.manifest import read_manifest


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def _user_project(root: Path, make_dump) -> Path:
    """proj/images/<class>/... (the user's originals, more than --per-class keeps), an unrelated file, a bad file."""
    make_dump(root / "images", {"cat": 8, "dog": 8, "bird": 5})
    (root / "images" / "notes.txt").write_text("my notes, not an image\n")
    (root / "images" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 half a jpeg")
    (root / "README.md").write_text("my project\n")
    return root


def test_out_that_contains_the_source_is_refused_and_no_file_is_touched(tmp_path, make_dump, capsys):
    """The reported case: the output folder's images/ IS the source (21 + 2 files; 20 would have been deleted)."""
    proj = _user_project(tmp_path / "proj", make_dump)
    before = _snapshot(proj)
    args = ["ingest", str(proj / "images"), "--out", str(proj), "--per-class", "3", "--classes", "cat,dog"]
    assert main([*args, "--no-progress"]) == 2
    message = _one_line_error(capsys)
    assert f"--out {proj} contains the source {proj / 'images'}" in message
    assert _snapshot(proj) == before


def test_out_inside_the_source_is_refused_before_anything_is_created(tmp_path, make_dump):
    make_dump(tmp_path / "raw", {"cat": 4, "dog": 4})
    before = _snapshot(tmp_path / "raw")
    with pytest.raises(BakeoffError, match=r"--out .*/raw/ds is inside the source .*/raw; write the dataset"):
        ingest(str(tmp_path / "raw"), str(tmp_path / "raw" / "ds"), progress=False)
    assert _snapshot(tmp_path / "raw") == before and not (tmp_path / "raw" / "ds").exists()


def test_overlap_is_judged_on_real_paths_and_archives(tmp_path, make_dump):
    """A symlinked --out that lands on the source's parent, and an archive inside --out, are overlaps too."""
    proj = _user_project(tmp_path / "proj", make_dump)
    (tmp_path / "alias").symlink_to(proj)
    before = _snapshot(proj)
    with pytest.raises(BakeoffError, match="contains the source"):
        ingest(str(proj / "images"), str(tmp_path / "alias"), progress=False)
    import shutil

    shutil.make_archive(str(proj / "dump"), "zip", proj / "images")
    before = _snapshot(proj)
    with pytest.raises(BakeoffError, match="contains the source"):
        ingest(str(proj / "dump.zip"), str(proj), progress=False)
    assert _snapshot(proj) == before


def test_out_that_is_a_file_is_refused(tmp_path, make_dump):
    make_dump(tmp_path / "raw", {"cat": 3, "dog": 3})
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(BakeoffError, match=r"--out .*/data.csv is a file, not a folder"):
        ingest(str(tmp_path / "raw"), str(tmp_path / "data.csv"), progress=False)
    assert (tmp_path / "data.csv").read_text() == "a,b\n"


def test_rerun_prunes_only_what_the_previous_ingest_wrote(tmp_path, make_dump):
    make_dump(tmp_path / "raw", {"cat": 4, "dog": 4, "bird": 4})
    out = tmp_path / "ds"
    ingest(str(tmp_path / "raw"), str(out), progress=False)
    written = set(_snapshot(out))
    # the user keeps their own files in the dataset folder, some where ingest writes
    (out / "images" / "bird" / "my_own_bird.png").write_bytes((tmp_path / "raw" / "cat" / "img0000.png").read_bytes())
    (out / "images" / "mine").mkdir()
    (out / "images" / "mine" / "keep.txt").write_text("mine\n")
    (out / "notes.txt").write_text("mine too\n")
    mine = {k: v for k, v in _snapshot(out).items() if k not in written}
    assert len(mine) == 3

    ingest(str(tmp_path / "raw"), str(out), progress=False, classes="cat,dog")  # bird's images are stale now
    after = _snapshot(out)
    assert {k: after.get(k) for k in mine} == mine  # every file of the user's is still there, unchanged
    kept = {Path(u).relative_to(out).as_posix() for u in read_manifest(out)["uri"]}
    ours = {k for k in after if k.startswith("images/") and k not in mine}
    assert ours == kept  # the images ingest wrote for bird are gone, nothing else
    assert not [k for k in written if k.startswith("images/bird/") and k in after]


def test_folder_with_files_ingest_did_not_write_is_refused(tmp_path, make_dump):
    """A dataset folder from elsewhere (no record of ingest's writes): its card.md and images/ are not ours."""
    make_dump(tmp_path / "raw", {"cat": 3, "dog": 3})
    theirs = tmp_path / "theirs"
    make_dump(theirs / "images", {"cat": 2})
    (theirs / "card.md").write_text("# someone else's card\n")
    before = _snapshot(theirs)
    with pytest.raises(BakeoffError) as info:
        ingest(str(tmp_path / "raw"), str(theirs), progress=False)
    message = str(info.value)
    assert f"{theirs} holds card.md, images/ that bakeoff ingest did not write" in message and "\n" not in message
    assert _snapshot(theirs) == before


def test_a_failed_run_records_what_it_wrote_so_the_next_run_cleans_it(tmp_path, make_dump):
    made = make_dump(tmp_path / "raw", {"cat": 4, "dog": 1, "bird": 4})
    out = tmp_path / "ds"
    with pytest.raises(BakeoffError, match="class 'dog' has only 1 image"):
        ingest(str(tmp_path / "raw"), str(out), progress=False)
    written = set(_snapshot(out))
    assert len([k for k in written if k.startswith("images/")]) == 9  # materialised before the split check
    record = (out / RECORD_NAME).read_text().splitlines()
    assert {json.loads(line) for line in record[1:]} == written - {RECORD_NAME}  # everything it wrote, listed

    ingest(str(tmp_path / "raw"), str(out), progress=False, classes="cat,bird")
    dog_sha = hashlib.sha256(made["dog"][0].read_bytes()).hexdigest()
    assert not (out / "images" / "dog").exists() and dog_sha not in str(sorted(_snapshot(out)))
    assert {json.loads(line) for line in (out / RECORD_NAME).read_text().splitlines()[1:]} == set(_snapshot(out)) - {
        RECORD_NAME
    }


needs_fashion_mnist = pytest.mark.skipif(
    not (demo_data.FASHION_MNIST_DIR / demo_data.IMAGES_FILE).exists(),
    reason="needs Debian's dataset-fashion-mnist (make apt-runtime)",
)


@needs_fashion_mnist
def test_demo_data_rerun_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "demo"
    demo_data.make_demo_data(str(out), per_class=6, classes="maglietta,borsa")
    first = _snapshot(out)
    (out / "raw-img" / "borsa" / "my_bag.png").write_bytes((out / "raw-img" / "senza_cartella.png").read_bytes())
    (out / "notes.txt").write_text("mine\n")
    mine = {k: v for k, v in _snapshot(out).items() if k not in first}
    demo_data.make_demo_data(str(out), per_class=4, classes="maglietta,borsa")
    after = _snapshot(out)
    assert {k: after.get(k) for k in mine} == mine  # the user's files, unchanged
    garments = [k for k in after if k.startswith("raw-img/borsa/") and k.endswith((".png", ".jpeg"))]
    assert len(garments) == 4 + 1  # the 2 stale garments of the first run are gone, the user's bag stays
    record = out / write_record.record_name("demo-data")
    listed = {json.loads(line) for line in record.read_text().splitlines()[1:]}
    assert listed == set(after) - set(mine) - {record.name}  # everything else is listed as demo-data's own


@needs_fashion_mnist
def test_demo_data_refuses_a_folder_it_did_not_make(tmp_path, make_dump, capsys):
    """An Animals-10 download with its own translate.json: demo-data once replaced its raw-img/ wholesale."""
    out = tmp_path / "animals10"
    make_dump(out / "raw-img", {"cane": 3, "gatto": 3})
    (out / "translate.json").write_text(json.dumps({"cane": "dog", "gatto": "cat"}))
    before = _snapshot(out)
    assert main(["demo-data", "--out", str(out), "--per-class", "3"]) == 2
    assert f"{out} holds raw-img/, translate.json that bakeoff demo-data did not write" in _one_line_error(capsys)
    assert _snapshot(out) == before


def test_predict_refuses_an_out_inside_the_source_or_over_a_foreign_file_before_loading_the_model(tmp_path, make_dump):
    from bakeoff.predict import predict_source

    make_dump(tmp_path / "photos", {"new": 3})
    (tmp_path / "budget.csv").write_text("month,amount\njan,10\n")
    before = _snapshot(tmp_path)
    model = "models:/no-such-model@champion"  # never loaded: the request is checked first
    with pytest.raises(BakeoffError, match=r"--out .*/photos/preds.csv is inside the source .*/photos"):
        predict_source(model, str(tmp_path / "photos"), str(tmp_path / "photos" / "preds.csv"))
    with pytest.raises(BakeoffError, match=r"--out .*/budget.csv exists and was not written by bakeoff predict"):
        predict_source(model, str(tmp_path / "photos"), str(tmp_path / "budget.csv"))
    with pytest.raises(BakeoffError, match="--out s3://in/drop/preds.csv overlaps the source s3://in/drop"):
        predict_source(model, "s3://in/drop", "s3://in/drop/preds.csv")
    assert _snapshot(tmp_path) == before
