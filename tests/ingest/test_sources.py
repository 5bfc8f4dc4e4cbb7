"""bakeoff.sources and ingest over archives and S3: safe names, symlinks skipped with a reason, same dataset."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import boto3
import pandas as pd
import pytest

from bakeoff import sources
from bakeoff.errors import BakeoffError
from bakeoff.ingest import ingest
from bakeoff.manifest import read_manifest

from support import encode, photo


def test_normalise_relpath_strips_escapes():
    assert sources.normalise_relpath("../../etc/x.png") == "etc/x.png"
    assert sources.normalise_relpath("/abs/cane/./a.jpg") == "abs/cane/a.jpg"
    assert sources.normalise_relpath("raw-img\\cane\\a.jpg") == "raw-img/cane/a.jpg"
    assert sources.normalise_relpath("a/b/../../../c/d.png") == "c/d.png"


def test_label_is_the_folder_directly_above_the_file():
    assert sources.label_from_relpath("raw-img/cane/x.jpeg") == "cane"
    assert sources.label_from_relpath("data/raw-img/cavallo/y.png") == "cavallo"
    assert sources.label_from_relpath("x.png") is None


@pytest.mark.parametrize(
    "path, litter",
    [
        (".DS_Store", True),
        ("cane/.DS_Store", True),
        ("cane/Thumbs.db", True),
        ("cane/desktop.ini", True),
        ("__MACOSX/cane/._a.jpg", True),
        (".git/cane/a.jpg", True),
        ("cane/.hidden.jpg", True),
        ("cane/a.jpg", False),
        ("raw-img/cane/thumbs.png", False),
    ],
)
def test_litter(path, litter):
    assert sources.is_litter(path) is litter


def _dump_members(make_dump, tmp_path) -> dict[str, bytes]:
    made = make_dump(tmp_path / "src", {"cane": 4, "gatto": 4})
    return {f"raw-img/{label}/{p.name}": p.read_bytes() for label, paths in made.items() for p in paths}


def _nothing_escaped(tmp_path: Path, allowed: set[str]) -> None:
    """Only the expected top-level entries exist in tmp_path, and nothing named like the hostile member exists."""
    assert {p.name for p in tmp_path.iterdir()} <= allowed
    assert not any(p.name == "evil.png" for p in tmp_path.parent.rglob("evil.png") if "ds" not in p.parts)
    assert not Path("/etc/evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_zip_with_escaping_member_and_symlink(tmp_path, make_dump):
    members = _dump_members(make_dump, tmp_path)
    evil = encode(photo("coffee").resize((40, 30)))
    archive = tmp_path / "dump.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("../../../cane/evil.png", evil)
        zf.writestr("loose.png", encode(photo("astronaut").resize((40, 30))))
        zf.writestr("__MACOSX/raw-img/cane/._x.png", b"\x00\x05\x16\x07")
        link = zipfile.ZipInfo("raw-img/cane/link.png")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    out = tmp_path / "ds"
    result = ingest(str(archive), str(out), progress=False)
    df = read_manifest(out)
    assert result.n_images == 9
    assert set(df["label"]) == {"cane", "gatto"}  # '../../../cane/evil.png' is just a file in class 'cane'
    evil_row = df[df["source"].str.endswith("../../../cane/evil.png")].iloc[0]
    assert Path(evil_row.uri).resolve().is_relative_to(out.resolve())
    assert evil_row.uri == str(out / "images" / "cane" / f"{evil_row.sha256}.png")
    assert evil_row.source == f"{archive}!../../../cane/evil.png"
    rejected = dict(zip(*[pd.read_csv(out / "rejected.csv")[c] for c in ("uri", "reason")]))
    assert rejected[f"{archive}!raw-img/cane/link.png"] == "not-a-regular-file: symlink"
    assert rejected[f"{archive}!loose.png"].startswith("unlabelled: file at top level")
    assert result.card["ignored_litter"] == 1
    _nothing_escaped(tmp_path, {"src", "dump.zip", "ds"})


def test_tar_gz_with_escaping_member_symlink_and_device(tmp_path, make_dump):
    members = _dump_members(make_dump, tmp_path)
    evil = encode(photo("coffee").resize((40, 30)))
    archive = tmp_path / "dump.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for name, data in members.items():
            add(name, data)
        add("../../cane/evil.png", evil)
        add("/abs/gatto/evil2.png", encode(photo("astronaut").resize((40, 30))))
        link = tarfile.TarInfo("raw-img/cane/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../../etc/passwd"
        tf.addfile(link)
        dev = tarfile.TarInfo("raw-img/cane/dev.png")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)
    out = tmp_path / "ds"
    result = ingest(str(archive), str(out), progress=False)
    df = read_manifest(out)
    assert result.n_images == 10
    assert all(Path(u).resolve().is_relative_to(out.resolve()) for u in df["uri"])
    assert df["label"].value_counts().to_dict() == {"gatto": 5, "cane": 5}
    reasons = pd.read_csv(out / "rejected.csv")["reason"].tolist()
    assert sorted(reasons) == ["not-a-regular-file: device or fifo", "not-a-regular-file: symlink"]
    _nothing_escaped(tmp_path, {"src", "dump.tar.gz", "ds"})


def test_folder_tar_and_zip_give_the_same_dataset(tmp_path, make_dump):
    made = make_dump(tmp_path / "src" / "raw-img", {"cane": 5, "gatto": 5, "ragno": 4})
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        tf.add(tmp_path / "src", arcname="dump")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        for label, paths in made.items():
            for p in paths:
                zf.write(p, f"raw-img/{label}/{p.name}")
    hashes = {
        ingest(str(tmp_path / s), str(tmp_path / f"out_{i}"), progress=False).card["dataset_hash"]
        for i, s in enumerate(["src", "d.tar", "d.zip"])
    }
    assert len(hashes) == 1


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(BakeoffError, match="source not found"):
        list(sources.iter_source(str(tmp_path / "missing")))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BakeoffError, match="cannot open zip archive"):
        list(sources.iter_source(str(tmp_path / "broken.zip")))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(BakeoffError, match="unsupported source"):
        list(sources.iter_source(str(tmp_path / "file.txt")))
    (tmp_path / "l.csv").write_text("file,class\na.png,cane\n")
    with pytest.raises(BakeoffError, match="needs a header with columns path,label"):
        sources.read_labels_csv(str(tmp_path / "l.csv"))


def _upload_dir(root: Path, bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3")
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


def test_s3_prefix_ingest_matches_local(tmp_path, make_dump, s3_server):
    make_dump(tmp_path / "src" / "raw-img", {"cane": 5, "gatto": 5})
    (tmp_path / "src" / "raw-img" / "cane" / "zero.jpg").write_bytes(b"")
    (tmp_path / "src" / "raw-img" / ".DS_Store").write_bytes(b"\x00\x00")
    _upload_dir(tmp_path / "src", "bakeoff-test", "dumps/v1")
    local = ingest(str(tmp_path / "src"), str(tmp_path / "local"), progress=False)
    remote = ingest("s3://bakeoff-test/dumps/v1", str(tmp_path / "remote"), progress=False)
    assert remote.card["dataset_hash"] == local.card["dataset_hash"]
    df = read_manifest(tmp_path / "remote")
    assert all(s.startswith("s3://bakeoff-test/dumps/v1/raw-img/") for s in df["source"])
    assert all(Path(u).exists() for u in df["uri"])  # materialised locally: the folder is self-contained
    assert remote.card["rejected"] == {"zero-byte": 1} and remote.card["ignored_litter"] == 1
    # an archive on S3 works too
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in (tmp_path / "src").rglob("*.png"):
            zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    boto3.client("s3").upload_file(str(archive), "bakeoff-test", "dumps/d.zip")
    zipped = ingest("s3://bakeoff-test/dumps/d.zip", str(tmp_path / "zipped"), progress=False)
    assert zipped.card["dataset_hash"] == local.card["dataset_hash"]
    with pytest.raises(BakeoffError, match="cannot list s3://no-such-bucket"):
        ingest("s3://no-such-bucket/x", str(tmp_path / "none"), progress=False)


def test_local_symlinks_to_files_are_followed_broken_ones_rejected(tmp_path, make_dump):
    make_dump(tmp_path / "raw", {"cane": 3, "gatto": 3})
    extra = tmp_path / "elsewhere" / "photo.png"
    extra.parent.mkdir()
    extra.write_bytes(encode(photo("coffee").resize((40, 30))))
    (tmp_path / "raw" / "cane" / "link.png").symlink_to(extra)
    (tmp_path / "raw" / "gatto" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    result = ingest(str(tmp_path / "raw"), str(tmp_path / "ds"), progress=False)
    df = read_manifest(tmp_path / "ds")
    assert result.n_images == 7 and (df["label"] == "cane").sum() == 4
    assert pd.read_csv(tmp_path / "ds" / "rejected.csv")["reason"].tolist() == ["not-a-regular-file: broken symlink"]


def test_damaged_archives_report_what_they_can(tmp_path, make_dump):
    members = _dump_members(make_dump, tmp_path)
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("raw-img/cane/locked.png", b"secret")
    raw = bytearray(archive.read_bytes())
    # mark the last member encrypted (bit 0 of the flags, in its central directory entry)
    entry = raw.rindex(b"PK\x01\x02")
    raw[entry + 8] |= 0x1
    # flip one byte inside the first member's stored data: its CRC no longer matches
    first = zipfile.ZipFile(archive).infolist()[0]
    raw[first.header_offset + 30 + len(first.filename) + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    items = {i.relpath: i for i in sources.iter_source(str(archive))}
    assert items[first.filename].skip_reason.startswith("corrupt-archive-member: Bad CRC-32")
    assert items["raw-img/cane/locked.png"].skip_reason == "encrypted: zip member needs a password"
    assert sum(i.skip_reason is None for i in items.values()) == len(members) - 1

    tgz = tmp_path / "d.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    items = list(sources.iter_source(str(cut)))
    assert 0 < sum(i.skip_reason is None for i in items) < len(members)
    assert items[-1].skip_reason.startswith("corrupt-archive:")
