"""components.fingerprint: a cheap identity of the raw dump that changes exactly when the data (or version) does."""

from __future__ import annotations

import os

import pytest

from bakeoff.errors import BakeoffError
from components.fingerprint import fingerprint


@pytest.fixture
def raw_dump(tmp_path):
    from bakeoff.demo_data import make_demo_data

    return make_demo_data(str(tmp_path / "raw"), per_class=3, classes="sneaker,bag")


def test_same_data_same_digest_and_any_change_moves_it(raw_dump, tmp_path):
    first = fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1")
    assert len(first) == 16 and int(first, 16) >= 0
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1") == first
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v2") != first  # an explicit data version
    assert fingerprint(raw_dump.raw_dir, "", "v1") != first  # the label map is part of the data

    added = tmp_path / "raw" / "raw-img" / "borsa" / "new.png"
    added.write_bytes((tmp_path / "raw" / "raw-img" / "borsa").glob("*.png").__next__().read_bytes())
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1") != first  # a new file
    added.unlink()
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1") == first

    stat = os.stat(raw_dump.label_map)
    os.utime(raw_dump.label_map, (stat.st_atime, stat.st_mtime + 10))  # touched: mtime is part of the identity
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1") != first


def test_single_archive_and_s3_prefix(raw_dump, tmp_path, s3_server):
    import shutil

    from bakeoff import storage

    archive = shutil.make_archive(str(tmp_path / "dump"), "zip", raw_dump.raw_dir)
    assert len(fingerprint(archive, "", "")) == 16

    storage.upload(archive, "s3://bakeoff-test/drops/dump.zip")
    one = fingerprint("s3://bakeoff-test/drops/dump.zip", "", "")  # a single object: size + ETag
    prefix = fingerprint("s3://bakeoff-test/drops", "", "")
    storage.write_bytes("s3://bakeoff-test/drops/extra.txt", b"more data")
    assert fingerprint("s3://bakeoff-test/drops", "", "") != prefix
    assert fingerprint("s3://bakeoff-test/drops/dump.zip", "", "") == one


def test_missing_data_is_a_one_line_error(tmp_path):
    with pytest.raises(BakeoffError, match="no data at") as err:
        fingerprint(str(tmp_path / "nothing"), "", "")
    assert "\n" not in str(err.value)


def test_a_same_size_replacement_of_an_s3_object_moves_the_digest(s3_server):
    """A relabelled or re-exported image of exactly the same size used to keep the old digest, so the cached ingest
    served stale data: each object's ETag is part of the identity now."""
    from bakeoff import storage

    storage.write_bytes("s3://bakeoff-test/same/cat/a.jpg", b"A" * 1000)
    storage.write_bytes("s3://bakeoff-test/same/dog/b.jpg", b"B" * 1000)
    before = fingerprint("s3://bakeoff-test/same", "", "")
    storage.write_bytes("s3://bakeoff-test/same/cat/a.jpg", b"C" * 1000)  # same key, same size, new content
    after = fingerprint("s3://bakeoff-test/same", "", "")
    assert after != before
    storage.write_bytes("s3://bakeoff-test/same/cat/a.jpg", b"A" * 1000)
    assert fingerprint("s3://bakeoff-test/same", "", "") == before  # the content, not the upload time


def test_a_same_size_same_second_local_replacement_moves_the_digest(raw_dump):
    """Local files: the nanosecond mtime, so an edit within the same second (same size) is seen too."""
    first = fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1")
    stat = os.stat(raw_dump.label_map)
    os.utime(raw_dump.label_map, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))  # same second, same size
    assert fingerprint(raw_dump.raw_dir, raw_dump.label_map, "v1") != first
