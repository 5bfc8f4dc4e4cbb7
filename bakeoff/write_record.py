"""The files a step wrote into a folder the user named: the only files that step may later replace or delete.

Why: a dataset folder or a demo dump can sit beside the user's own files, and a directory sweep cannot tell the
two apart (one deleted every original a re-run did not keep). So a step appends each file's name to its record
*before* writing the file, and replaces or prunes only names found there: an interrupted run leaves a record that
covers everything it wrote, and a file the step did not write is never touched.

The record is a hidden JSON-lines file in the folder (``.bakeoff-<step>-written.jsonl``: a header object, then one
JSON string per relative path), so it travels with the folder and ingest skips it as litter.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from bakeoff import storage
from bakeoff.errors import BakeoffError


def record_name(step: str) -> str:
    """The record's file name for ``step`` (one per step, so two steps never claim each other's files)."""
    return f".bakeoff-{step}-written.jsonl"


class WriteRecord:
    """What ``bakeoff <step>`` wrote under ``folder``, read from and appended to its record file."""

    def __init__(self, folder: str | os.PathLike, step: str) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise BakeoffError(f"--out {folder} is a file, not a folder; give a folder to write into")
        self.step = step
        self.path = self.folder / record_name(step)
        self._names = self._read()
        self._lock = threading.Lock()
        self._handle: TextIO | None = None

    def _read(self) -> set[str]:
        """Names in the record; a line cut short by a crash (no newline, not JSON) is ignored, not trusted."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return set()
        names = set()
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, str):
                names.add(value)
        return names

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def owns(self, rel: str) -> bool:
        return rel in self._names

    def foreign(self, rels: Iterable[str]) -> list[str]:
        """Those of ``rels`` that exist in the folder but are not in the record (a folder counts when any file
        below it is not ours): what this step must neither replace nor delete. Shown with a '/' for folders."""
        found = []
        for rel in rels:
            path = self.folder / rel
            if path.is_dir():
                files = (p.relative_to(self.folder).as_posix() for p in path.rglob("*") if not p.is_dir())
                if any(not self.owns(f) for f in files):
                    found.append(f"{rel}/")
            elif (path.exists() or path.is_symlink()) and not self.owns(rel):
                found.append(rel)
        return found

    def refuse_foreign(self, rels: Iterable[str], hint: str) -> None:
        """One error naming every path the step would write over that it did not write, before anything is written."""
        found = self.foreign(rels)
        if found:
            raise BakeoffError(
                f"{self.folder} holds {', '.join(found)} that bakeoff {self.step} did not write "
                f"(no entry in {self.path.name}); {hint}"
            )

    @contextmanager
    def open(self) -> Iterator[WriteRecord]:
        """Append to the record while the block writes; each ``add`` is flushed before its file is written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as handle:
            if fresh:
                handle.write(json.dumps({"written_by": f"bakeoff {self.step}", "format": 1}) + "\n")
                handle.flush()
            self._handle = handle
            try:
                yield self
            finally:
                self._handle = None

    def add(self, rel: str) -> None:
        """Record ``rel`` (relative, '/'-separated) as written by this step; call before writing it. Thread-safe."""
        with self._lock:
            if rel in self._names:
                return
            if self._handle is None:
                raise RuntimeError("WriteRecord.add outside WriteRecord.open()")
            self._handle.write(json.dumps(rel) + "\n")
            self._handle.flush()
            self._names.add(rel)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write ``folder/rel`` atomically, after recording it; refuse to replace a file this step did not write."""
        target = self.folder / rel
        if (target.exists() or target.is_symlink()) and not self.owns(rel):
            raise BakeoffError(f"{target} exists and was not written by bakeoff {self.step}; move it away first")
        self.add(rel)
        storage.write_bytes(target, data)
        return target

    def prune(self, keep: set[str]) -> list[str]:
        """Delete recorded files not in ``keep`` (and folders that held them, once empty), then rewrite the record
        to what is left. Anything outside the folder (a name edited into the record, a path through a symlink) and
        anything that is no longer a plain file is left alone. Returns the names deleted."""
        root = self.folder.resolve()
        deleted = []
        for rel in sorted(self._names - keep):
            path = self.folder / rel
            if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
                continue
            path.unlink()
            deleted.append(rel)
            parent = path.parent
            while parent != self.folder and parent.is_relative_to(self.folder) and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        self._names &= keep
        lines = [json.dumps({"written_by": f"bakeoff {self.step}", "format": 1})]
        lines += [json.dumps(rel) for rel in sorted(self._names) if (self.folder / rel).exists()]
        storage.write_bytes(self.path, ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        self._names = self._read()
        return deleted


def check_apart(source: str, out: str, what: str) -> None:
    """Refuse an output that overlaps a local source in either direction (the same path, one inside the other),
    judged on real paths, so a step never writes among, or prunes, the user's originals. ``what`` names the output
    for the message (e.g. "the dataset")."""
    if storage.is_s3(source) or storage.is_s3(out):
        src_prefix, dst_prefix = source.rstrip("/") + "/", out.rstrip("/") + "/"
        if dst_prefix.startswith(src_prefix) or src_prefix.startswith(dst_prefix):
            raise BakeoffError(f"--out {out} overlaps the source {source}; write {what} outside the source prefix")
        return
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst:
        kind = "folder" if src.is_dir() else "file"
        raise BakeoffError(f"--out must not be the source {kind}: write {what} to a new path, e.g. --out data")
    if dst in src.parents:
        raise BakeoffError(
            f"--out {out} contains the source {source}; write {what} to a folder outside it, so no original "
            "can be overwritten or deleted"
        )
    if src in dst.parents:
        raise BakeoffError(f"--out {out} is inside the source {source}; write {what} to a folder outside it")
