"""bakeoff.storage off the happy path: modes that follow the umask, fsync before the rename, full disks and
read-only folders that fail in one line naming the path, and never a half-written file.

A full disk is made for real with the kernel's per-process file-size limit (RLIMIT_FSIZE; SIGXFSZ ignored so the
write fails with EFBIG instead of killing the process); a read-only folder with chmod 0555 and, because root ignores
permission bits, the writing process drops to the unprivileged uid 65534 (nobody) first.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bakeoff import storage
from bakeoff.errors import BakeoffError

from support import as_unprivileged, call_in_child, limit_file_size, temp_leftovers

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _with_umask(mask: int, write) -> None:
    old = os.umask(mask)
    try:
        write()
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_files_and_folders_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    """A team on a shared volume (or a pod under another uid) can read what bakeoff writes, as its umask allows."""
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    out = tmp_path / "out"

    def write():
        storage.write_bytes(out / "new" / "a.bin", b"a")
        storage.write_json(out / "b.json", {"b": 1})
        storage.upload(source, out / "copies" / "c.bin")
        storage.download(source, out / "d.bin")
        with storage.atomic_path(out / "e.bin") as tmp:
            Path(tmp).write_bytes(b"e")
        with storage.output_path(str(out / "model" / "f.keras")) as tmp:
            assert tmp.endswith(".keras")  # Keras insists on the suffix
            Path(tmp).write_bytes(b"f")

    _with_umask(mask, write)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 6 and not temp_leftovers(out)
    assert {_mode(p) for p in files} == {file_mode}
    assert {_mode(p) for p in out.rglob("*") if p.is_dir()} | {_mode(out)} == {dir_mode}


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    """Crash safety: the data reaches the disk before the new name points at it, and the rename itself is durable.

    A spy around the real os.fsync / os.replace records the order (there is no way to cut the power in a test).
    """
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "sub" / "x.bin"
    storage.write_bytes(target, b"data")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert Path(events[0][1]).parent == target.parent and events[0][1] != str(target)  # the temp file, by fd
    assert events[1][1] == str(target)
    assert events[2][1] == str(target.parent)  # the folder, so the new name survives a crash
    assert target.read_bytes() == b"data"
    events.clear()
    with storage.atomic_path(tmp_path / "cache-entry.bin", durable=False) as tmp:  # a self-checking cache entry
        Path(tmp).write_bytes(b"pixels")
    assert [kind for kind, _ in events] == ["replace"]


def _run_write(code: str, *, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, preexec_fn=preexec, timeout=120
    )


WRITE_AND_REPORT = """
import sys
from bakeoff import storage
from bakeoff.errors import BakeoffError
try:
    storage.write_bytes(sys.argv[-1] if len(sys.argv) > 1 else {target!r}, b"x" * {size})
except BakeoffError as exc:
    print("BAKEOFF", exc)
    sys.exit(2)
print("WROTE")
"""


def test_a_full_disk_fails_in_one_line_naming_the_path_and_leaves_no_half_file(tmp_path):
    target = tmp_path / "out" / "model.keras"
    target.parent.mkdir()
    target.write_bytes(b"the previous, complete model")
    done = _run_write(WRITE_AND_REPORT.format(target=str(target), size=200_000), preexec=limit_file_size(64_000))
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stdout.strip()
    assert line.count("\n") == 0 and "Traceback" not in done.stderr
    assert line.startswith(f"BAKEOFF cannot write {target}: File too large (errno 27);"), line
    assert target.read_bytes() == b"the previous, complete model"  # the old file is untouched
    assert not temp_leftovers(target.parent)


@pytest.fixture
def shared_folder():
    """A folder any uid may enter (pytest's own tmp folders are 0700 root), removed afterwards."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="bakeoff-shared-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_read_only_folder_fails_in_one_line_naming_the_path(shared_folder):
    """A dataset folder owned by someone else: the write is refused by the kernel, the message names the folder."""
    folder = shared_folder / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    target = folder / "sub" / "features.npz"
    outcome = call_in_child(lambda: storage.write_bytes(target, b"x" * 10), preexec=as_unprivileged())
    assert outcome.startswith(f"BakeoffError cannot write {target}: Permission denied (errno 13);"), outcome
    assert "writable for uid 65534" in outcome and "\n" not in outcome
    assert list(folder.iterdir()) == []
    existing = shared_folder / "existing"
    existing.mkdir()
    existing.chmod(0o555)
    outcome = call_in_child(lambda: storage.write_bytes(existing / "a.bin", b"x"), preexec=as_unprivileged())
    assert outcome.startswith(f"BakeoffError cannot write {existing / 'a.bin'}: Permission denied (errno 13);")
    assert list(existing.iterdir()) == []


def test_a_missing_source_is_named_as_the_file_that_cannot_be_read(tmp_path):
    with pytest.raises(BakeoffError, match=r"cannot (read|copy) .*nope\.bin") as info:
        storage.upload(tmp_path / "nope.bin", tmp_path / "out.bin")
    assert "\n" not in str(info.value)
    assert not temp_leftovers(tmp_path)


def test_cli_full_disk_exits_2_with_the_path(tmp_path):
    """The whole CLI path: `bakeoff demo-data` into a folder it cannot fill prints one `error:` line and exits 2."""
    out = tmp_path / "raw"
    cache = tmp_path / "cache"  # the CLI log lives under the cache root: already past the limit, like a full disk
    (cache / "bakeoff" / "logs").mkdir(parents=True)
    (cache / "bakeoff" / "logs" / "bakeoff.log").write_text("x" * 1000)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run(
        [sys.executable, "-m", "bakeoff", "demo-data", "--out", str(out), "--per-class", "3"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limit_file_size(300),
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write {out}"), done.stderr
    assert "File too large (errno 27)" in errors[0]
    assert not temp_leftovers(out)


def test_s3_listing_carries_each_objects_etag(s3_server):
    storage.write_bytes("s3://bakeoff-test/p/a.txt", b"aaaa")
    (item,) = storage.list_files("s3://bakeoff-test/p")
    assert item.relpath == "a.txt" and item.size == 4
    assert item.etag == "74b87337454200d4d33f80c4663dc5e5"  # md5 of a single PUT


def test_remove_deletes_local_files_and_s3_objects_and_tolerates_absent_ones(tmp_path, s3_server):
    storage.write_bytes(tmp_path / "x.bin", b"x")
    storage.write_bytes("s3://bakeoff-test/r/x.bin", b"x")
    storage.remove(tmp_path / "x.bin")
    storage.remove("s3://bakeoff-test/r/x.bin")
    storage.remove(tmp_path / "never.bin")
    assert not (tmp_path / "x.bin").exists() and not storage.exists("s3://bakeoff-test/r/x.bin")


def test_an_s3_write_that_fails_is_one_line_naming_the_uri(s3_server):
    for write in (
        lambda: storage.write_bytes("s3://no-such-bucket/out/x.bin", b"x"),
        lambda: storage.write_json("s3://no-such-bucket/out/x.json", {}),
    ):
        with pytest.raises(BakeoffError, match=r"^cannot write s3://no-such-bucket/out/x\.(bin|json): .*NoSuchBucket"):
            write()
    with pytest.raises(BakeoffError, match=r"^cannot upload to s3://no-such-bucket/y: .*NoSuchBucket") as info:
        storage.upload(__file__, "s3://no-such-bucket/y")
    assert "\n" not in str(info.value)
