"""kfp.local's task cache serves only outputs whose files are as they were cached (pipelines.local_cache).

Real kfp.local runs of a small real pipeline: a cached step writes a folder artifact, an uncached step reads it and
fails on a truncated file (as train_head fails on a truncated features.npz). A side-effect file counts how often the
cached step really ran.
"""

import logging
import os
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from pipelines import local_cache


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def produce(counter: str, out: Output[Dataset]):
    """The cached step: 1000 bytes of data in a folder artifact; appends a line to ``counter`` each time it runs."""
    import os

    os.makedirs(out.path, exist_ok=True)
    with open(os.path.join(out.path, "data.bin"), "wb") as handle:
        handle.write(bytes(range(250)) * 4)
    with open(os.path.join(out.path, "meta.txt"), "w") as handle:
        handle.write("meta")
    with open(counter, "a") as handle:
        handle.write("ran\n")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def consume(data: Input[Dataset]) -> int:
    """Reads the artifact whole; a damaged one fails the task (and with it the pipeline)."""
    import os

    payload = open(os.path.join(data.path, "data.bin"), "rb").read()
    if payload != bytes(range(250)) * 4:
        raise ValueError(f"damaged input: {len(payload)} bytes")
    return len(payload)


@dsl.pipeline(name="cache-check")
def cache_check(counter: str) -> int:
    made = produce(counter=counter)
    made.set_caching_options(enable_caching=True)
    used = consume(data=made.outputs["out"])
    used.set_caching_options(enable_caching=False)
    return used.output


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _artifact_file(root: Path, name: str) -> Path:
    (path,) = [p for p in root.rglob(name) if ".kfp_cache" not in p.parts]
    return path


@pytest.fixture
def pipeline_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path / "kfp"


def test_kfp_local_alone_serves_a_damaged_cached_output(pipeline_root, tmp_path):
    """The failure this module exists for, shown on kfp.local's own cache: the damaged entry is a hit, every run fails."""
    from kfp import local

    counter = tmp_path / "counter.txt"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), enable_caching=True)
    assert cache_check(counter=str(counter)).output == 1000
    data = _artifact_file(pipeline_root, "data.bin")
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="consume"):
        cache_check(counter=str(counter))
    assert _runs(counter) == 1  # the cached step never ran again


@pytest.mark.parametrize("damage", ["truncated", "same_size", "deleted_file", "record_lost"])
def test_a_damaged_cached_output_is_recomputed_and_replaced(pipeline_root, tmp_path, caplog, damage):
    counter = tmp_path / "counter.txt"
    local_cache.init(pipeline_root)
    assert cache_check(counter=str(counter)).output == 1000
    assert cache_check(counter=str(counter)).output == 1000 and _runs(counter) == 1  # a verified hit
    data = _artifact_file(pipeline_root, "data.bin")
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "same_size":
        raw = bytearray(data.read_bytes())
        raw[500] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "deleted_file":
        data.unlink()
    else:
        for record in (pipeline_root / ".kfp_cache").glob("*" + local_cache.RECORD_SUFFIX):
            record.unlink()
    with caplog.at_level(logging.WARNING, logger="pipelines.local_cache"):
        assert cache_check(counter=str(counter)).output == 1000
    assert _runs(counter) == 2  # the cached step ran again
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipelines.local_cache"]
    assert "is not served" in warning and "running the task again" in warning
    expected = {
        "truncated": "data.bin has 100 bytes, 1000 when cached",
        "same_size": "data.bin changed since it was cached",
        "deleted_file": "data.bin is missing",
        "record_lost": "no file record",
    }[damage]
    assert expected in warning, warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.local_cache"):
        assert cache_check(counter=str(counter)).output == 1000  # the entry was replaced: a clean hit again
    assert _runs(counter) == 2 and not [r for r in caplog.records if r.name == "pipelines.local_cache"]


def test_bakeoff_local_runner_uses_the_verifying_cache(tmp_path, monkeypatch):
    """run_local starts kfp.local through local_cache.init; the singleton kfp.local consults is ours."""
    import inspect

    from kfp.local import cache

    from pipelines import local

    local_cache.init(tmp_path / "kfp")
    assert type(cache.get_local_cache()).__name__ == "VerifiedLocalCache"
    assert cache.get_local_cache().cache_root == os.path.join(str(tmp_path / "kfp"), ".kfp_cache")
    assert "local_cache.init(" in inspect.getsource(local.run_local)
