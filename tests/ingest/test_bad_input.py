"""Issue 8 item 6: bad input never gives a traceback.

Non-UTF-8 file and folder names (made for real: bytes paths on the local disk, raw tar and zip member names), a
damaged or null-labelled manifest, a class that loses every image to label conflicts, and a tar.gz bomb whose
peak memory is measured in a child process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import bakeoff
from bakeoff import manifest
from bakeoff.cli import main
from bakeoff.errors import BakeoffError
from bakeoff.ingest import ingest
from bakeoff.manifest import read_manifest

from support import build_tiny_dataset, write_image

BAD_FILE = b"caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
BAD_FOLDER = b"ch\xe2t"


def _bytes_path(base: Path, *parts: bytes) -> str:
    """A real path with non-UTF-8 bytes in it, as Python sees it (surrogate escapes)."""
    return os.fsdecode(os.path.join(os.fsencode(base), *parts))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def _rejected(out: Path) -> dict[str, str]:
    with open(out / "rejected.csv", encoding="utf-8") as handle:  # strict UTF-8: a surrogate would fail here
        return {row["uri"]: row["reason"] for row in csv.DictReader(handle)}


def _raw_with_bad_names(root: Path, make_dump) -> Path:
    """cat/ and dog/ with 4 images each, one more cat under a Latin-1 file name, a class folder named in Latin-1."""
    make_dump(root, {"cat": 4, "dog": 4})
    write_image(Path(_bytes_path(root / "cat", BAD_FILE)), seed=500)
    os.mkdir(_bytes_path(root, BAD_FOLDER))
    for i in range(3):
        write_image(Path(_bytes_path(root, BAD_FOLDER, f"{i}.png".encode())), seed=600 + i)
    return root


def test_non_utf8_names_in_a_folder_are_ingested_under_safe_names_or_quarantined(tmp_path, make_dump, capsys):
    raw = _raw_with_bad_names(tmp_path / "raw", make_dump)
    assert main(["ingest", str(raw), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    assert "ingested 9 images in 2 classes" in capsys.readouterr().out
    df = read_manifest(tmp_path / "ds")
    assert set(df["label"]) == {"cat", "dog"}
    assert f"{raw}/cat/caf\\xe9.png" in set(df["source"])  # the file is used; its name shown with the byte escaped
    reasons = _rejected(tmp_path / "ds")
    assert reasons == {
        f"{raw}/ch\\xe2t/{i}.png": "bad-name: folder name ch\\xe2t is not UTF-8; rename the folder" for i in range(3)
    }
    card = json.loads((tmp_path / "ds" / "card.json").read_text(encoding="utf-8"))
    assert card["rejected"] == {"bad-name": 3}
    (tmp_path / "ds" / "card.md").read_text(encoding="utf-8")


def test_non_utf8_member_names_in_tar_and_zip_archives(tmp_path, make_dump):
    raw = _raw_with_bad_names(tmp_path / "raw", make_dump)
    # tar: raw member-name bytes, exactly as GNU tar stores them
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tf:
        tf.add(raw, arcname="dump")
    result = ingest(str(tmp_path / "d.tar.gz"), str(tmp_path / "ds_tar"), progress=False)
    assert result.n_images == 9 and result.card["rejected"] == {"bad-name": 3}
    assert f"{tmp_path}/d.tar.gz!dump/cat/caf\\xe9.png" in set(read_manifest(tmp_path / "ds_tar")["source"])

    # zip without the UTF-8 flag: names are CP437 by the format's rules, so every byte decodes to some character
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        for path in sorted(raw.rglob("*")):
            if path.is_file():
                zf.writestr(_RawNameInfo(os.fsencode(path.relative_to(raw))), path.read_bytes())
    result = ingest(str(tmp_path / "d.zip"), str(tmp_path / "ds_zip"), progress=False)
    assert result.n_images == 12 and result.card["classes"] == ["cat", "chΓt", "dog"]


class _RawNameInfo(zipfile.ZipInfo):
    """A zip member whose name is stored as the given raw bytes (zipfile itself only writes ASCII or UTF-8)."""

    def __init__(self, raw: bytes, utf8_flag: bool = False) -> None:
        super().__init__(raw.decode("latin-1"))
        self._raw, self._utf8_flag = raw, utf8_flag

    def _encodeFilenameFlags(self):  # zipfile's own method name
        return self._raw, self.flag_bits | (0x800 if self._utf8_flag else 0)


def test_zip_whose_names_claim_utf8_but_are_not_is_a_one_line_error(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        zf.writestr(_RawNameInfo(b"cat/" + BAD_FILE, utf8_flag=True), b"x")
    assert main(["ingest", str(tmp_path / "d.zip"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    message = _one_line_error(capsys)
    assert f"cannot read zip archive {tmp_path / 'd.zip'}: a member name marked UTF-8 is not UTF-8" in message


def test_predict_reports_non_utf8_names_as_rows(tmp_path, make_dump, monkeypatch):
    """A real model logged to a local SQLite MLflow store predicts a folder and a tar with Latin-1 names."""
    from bakeoff import tracking
    from bakeoff.predict import predict_source
    from bakeoff.tracking.models import log_and_register

    from support import CLASSES, IMAGE_SIZE, write_candidate_folders

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BAKEOFF_NO_PROGRESS", "1")
    tracking.reset()
    candidate = write_candidate_folders(tmp_path / "candidate", 127.5)
    import mlflow

    experiment = tracking.ensure_experiment("utf8-names")  # artifacts beside the SQLite file, in tmp_path
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    model = candidate.root / "model"
    _version, uri = log_and_register(
        run.info.run_id, str(model / "model.keras"), str(model / "model.json"), CLASSES, IMAGE_SIZE, "utf8-names"
    )
    raw = _raw_with_bad_names(tmp_path / "raw", make_dump)
    (raw / "cat" / "notes.txt").write_text("not an image")
    with tarfile.open(tmp_path / "d.tar", "w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tf:
        tf.add(raw, arcname="dump")
    for source, prefix in ((raw, ""), (tmp_path / "d.tar", "dump/")):
        out = tmp_path / f"{Path(source).name}.csv"
        predict_source(uri, str(source), str(out))
        rows = pd.read_csv(out, keep_default_na=False, encoding="utf-8").set_index("path")
        assert len(rows) == 13
        assert rows.loc[f"{prefix}cat/caf\\xe9.png", "predicted"] in CLASSES
        assert rows.loc[f"{prefix}ch\\xe2t/0.png", "error"] == ""
        assert rows.loc[f"{prefix}cat/notes.txt", "error"] == "not-an-image"
    tracking.reset()


# --------------------------------------------------------------------------------------------- damaged manifest


def test_truncated_manifest_is_a_one_line_error_naming_it(tmp_path, capsys):
    dataset = build_tiny_dataset(tmp_path / "ds")
    path = dataset / "manifest.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BakeoffError) as info:
        read_manifest(dataset)
    message = str(info.value)
    assert message.startswith(f"{path} is not a readable manifest (") and "\n" not in message
    assert message.endswith("re-run `bakeoff ingest` to write it again")
    args = ["features", str(dataset), "--out", str(tmp_path / "f"), "--weights", "none", "--image-size", "32"]
    assert main(args) == 2
    assert str(path) in _one_line_error(capsys)


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("label", None, "column label is empty in 1 row(s)"),
        ("sha256", None, "column sha256 is empty in 1 row(s)"),
        ("width", "wide", "column width must be int64"),
    ],
)
def test_manifest_with_null_or_mistyped_values_is_a_one_line_error(tmp_path, column, value, expected):
    dataset = build_tiny_dataset(tmp_path / "ds")
    df = pd.read_parquet(dataset / "manifest.parquet").astype(object)
    if isinstance(value, str):  # a whole column of the wrong type (parquet columns have one type)
        df[column] = df[column].astype(str)
    df.loc[3, column] = value
    df.to_parquet(dataset / "manifest.parquet", index=False)
    with pytest.raises(BakeoffError) as info:
        manifest.class_names(read_manifest(dataset))
    message = str(info.value)
    assert message.startswith(f"{dataset / 'manifest.parquet'}: {expected}") and "\n" not in message


# ------------------------------------------------------------------------------------------------ label conflicts


def _conflicted(root: Path, make_dump, victims: int) -> Path:
    """cat/dog/bird; `victims` of bird's 3 images are byte-identical copies of cat images (label conflicts)."""
    made = make_dump(root, {"cat": 4, "dog": 4, "bird": 3})
    for i in range(victims):
        made["bird"][i].write_bytes(made["cat"][i].read_bytes())
    return root


def test_images_lost_to_label_conflicts_are_named_in_the_summary_and_the_card(tmp_path, make_dump, capsys):
    raw = _conflicted(tmp_path / "raw", make_dump, victims=1)
    assert (
        main(["ingest", str(raw), "--out", str(tmp_path / "ds"), "--no-progress", "--val", "0.34", "--test", "0"]) == 0
    )
    assert "lost to label conflicts: bird 1, cat 1" in capsys.readouterr().out
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert card["lost_to_label_conflicts"] == {"bird": 1, "cat": 1}
    assert (
        "images lost to label conflicts (same content, two labels): bird 1, cat 1"
        in (tmp_path / "ds" / "card.md").read_text()
    )


def test_a_class_that_loses_every_image_to_label_conflicts_is_an_error(tmp_path, make_dump, capsys):
    raw = _conflicted(tmp_path / "raw", make_dump, victims=3)
    assert main(["ingest", str(raw), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    message = _one_line_error(capsys)
    assert "class 'bird' lost all its 3 images to label conflicts (the same content also labelled cat)" in message
    assert str(tmp_path / "ds" / "rejected.csv") in message
    assert len(_rejected(tmp_path / "ds")) == 6  # every copy on both sides, listed with its reason


# ------------------------------------------------------------------------------------------------ tar.gz bomb

_BOMB = """
import io, sys, tarfile
from pathlib import Path
sys.path.insert(0, {tests!r})
from support import write_image


def peak_mb():
    # VmHWM: this process's own peak RSS. ru_maxrss would not do: Linux keeps it across exec, so a child of a big
    # pytest process would report the parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


class Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


root = Path({root!r})
with tarfile.open(root / "bomb.tar.gz", "w:gz", compresslevel=1) as tf:  # streamed: never held in memory
    for label in ("cat", "dog"):
        for i in range(3):
            tf.add(write_image(root / "tmp.png", seed=i + 10 * (label == "dog")), arcname=f"raw/{{label}}/{{i}}.png")
    for i in range({members}):
        info = tarfile.TarInfo(f"raw/cat/zeros{{i}}.jpg")
        info.size = {member_bytes}
        tf.addfile(info, io.BufferedReader(Zeros(info.size), 1 << 20))
print("archive_bytes", (root / "bomb.tar.gz").stat().st_size)
built = peak_mb()

from bakeoff.ingest import ingest

result = ingest(str(root / "bomb.tar.gz"), str(root / "ds"), progress=False, workers=1, val=0.34, test=0.0)
print("rejected", result.card["rejected"], "images", result.n_images)
print("peak_mb", peak_mb(), "before_ingest_mb", built)
"""


def test_tar_gz_bomb_is_streamed_with_bounded_memory(tmp_path):
    """5 members of 400 MB of zeros (2 GB from a 9 MB tar.gz, the reported bomb): before the fix the child peaked at
    1768 MB RSS; streamed, at 195 MB, near the 138 MB it had before ingest started (the bound leaves 2x margin)."""
    script = _BOMB.format(tests=str(Path(__file__).parents[1]), root=str(tmp_path), members=5, member_bytes=400 * 2**20)
    env = {**os.environ, "PYTHONPATH": str(Path(bakeoff.__file__).parents[1])}
    run = [sys.executable, "-c", script]
    done = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert int(lines["archive_bytes"]) < 10 * 2**20
    assert lines["rejected"] == "{'not-an-image': 5} images 6"
    peak_mb = float(lines["peak_mb"].split()[0])
    assert peak_mb < 400, done.stdout


def test_members_are_read_in_chunks_never_whole(tmp_path):
    """A member bigger than the in-memory spool goes to a temporary file, and its bytes still hash and decode."""
    import numpy as np
    from PIL import Image

    from bakeoff import sources

    from support import encode

    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), "PNG")  # a real image above the spool size (noise does not compress)
    assert len(big) > sources.SPOOL_BYTES
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        info = tarfile.TarInfo("raw/x/big.png")
        info.size = len(big)
        tf.addfile(info, io.BytesIO(big))
    (tmp_path / "d.tar").write_bytes(buffer.getvalue())
    (item,) = list(sources.iter_source(str(tmp_path / "d.tar")))
    with item.open() as handle:
        assert handle.read() == big


def test_size_limit_is_enforced_while_reading_not_only_from_the_declared_size(tmp_path, s3_server, monkeypatch):
    """An S3 object that grew after it was listed: the listing said small, the stream says too large."""
    import boto3

    from bakeoff import sources

    from support import encode, photo

    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 100_000)
    small, big = encode(photo("coffee").resize((40, 30))), encode(photo("coffee"))
    assert len(small) < 100_000 < len(big)
    s3 = boto3.client("s3")
    s3.put_object(Bucket="bakeoff-test", Key="drop/cat/a.png", Body=small)
    (item,) = list(sources.iter_source("s3://bakeoff-test/drop"))
    assert item.skip_reason is None
    s3.put_object(Bucket="bakeoff-test", Key="drop/cat/a.png", Body=big)
    from bakeoff.images import ImageRejected

    with pytest.raises(ImageRejected) as info:
        item.open()
    assert info.value.reason == "too-large: more than 100000 bytes"
