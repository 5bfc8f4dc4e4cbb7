"""Config loading, CLI overrides, cron normalisation and the fingerprint step that keys ingest's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bakeoff.cli import main
from bakeoff.errors import BakeoffError
from components.fingerprint import fingerprint
from pipelines.client import validate_cron
from pipelines.settings import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_loads_and_options_override_it():
    cfg = load_config(ROOT / "configs" / "demo.yaml", {"backbones": "vgg16", "finetune_epochs": 0, "seed": None})
    assert cfg.parameters.backbones == ["vgg16"]
    assert cfg.parameters.finetune_epochs == 0
    assert cfg.parameters.weights == "mobilenet_v2=imagenet,vgg16=hed"  # kept from the file
    assert cfg.parameters.seed == 0  # None means "not given"
    assert cfg.settings.parallelism == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("parameters:\n  typo_field: 1\n", "typo_field"),
        ("parameters:\n  val_fraction: 0.9\n", "val_fraction"),
        ("- a list\n", "must be a mapping"),
        ("parameters: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(BakeoffError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_cron_gets_seconds_field():
    assert validate_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert validate_cron("30 0 3 * * *") == "30 0 3 * * *"
    with pytest.raises(BakeoffError):
        validate_cron("daily")


def data_fingerprint(uri: str, version: str = "") -> str:
    return fingerprint(uri, "", version)  # the component's function, called as plain Python


def test_fingerprint_changes_with_the_data(tmp_path, make_image):
    make_image(tmp_path / "raw" / "cat" / "a.png", seed=1)
    first = data_fingerprint(str(tmp_path / "raw"))
    assert data_fingerprint(str(tmp_path / "raw")) == first
    assert data_fingerprint(str(tmp_path / "raw"), version="2026-11") != first
    make_image(tmp_path / "raw" / "dog" / "b.png", seed=2)
    second = data_fingerprint(str(tmp_path / "raw"))
    assert second != first
    path = tmp_path / "raw" / "dog" / "b.png"
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))  # rewritten in place
    assert data_fingerprint(str(tmp_path / "raw")) != second
    with pytest.raises(BakeoffError, match="no data"):
        data_fingerprint(str(tmp_path / "missing"))


def test_fingerprint_of_an_s3_prefix(s3_server, make_image, tmp_path):
    from bakeoff import storage

    storage.upload(make_image(tmp_path / "a.png"), "s3://bakeoff-test/raw/cat/a.png")
    first = data_fingerprint("s3://bakeoff-test/raw")
    storage.upload(make_image(tmp_path / "b.png", seed=3), "s3://bakeoff-test/raw/dog/b.png")
    assert data_fingerprint("s3://bakeoff-test/raw") != first
    storage.upload(make_image(tmp_path / "c.png", seed=4), "s3://bakeoff-test/archive.zip")  # one object
    archive = data_fingerprint("s3://bakeoff-test/archive.zip")
    storage.upload(make_image(tmp_path / "d.png", seed=5, size=(40, 40)), "s3://bakeoff-test/archive.zip")
    assert data_fingerprint("s3://bakeoff-test/archive.zip") != archive
    with pytest.raises(BakeoffError, match="no data"):
        data_fingerprint("s3://bakeoff-test/nothing-here")


def test_run_without_data_is_one_line_error(tmp_path, monkeypatch, capsys):
    """Missing data is one of the run form's problems, reported with every other one (bakeoff.validation)."""
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config (options): ") and "parameters.data_uri: no data given" in err
    assert "\n" not in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_docs_show_the_current_parameters_and_settings():
    """docs/orchestration.md holds the tables `python -m pipelines.settings` prints (regenerate them from there)."""
    from pipelines.settings import Parameters, Settings, reference_table

    page = (ROOT / "docs" / "orchestration.md").read_text()
    for model in (Parameters, Settings):
        assert reference_table(model) in page, f"docs/orchestration.md: {model.__name__} table is stale"
    for model in (Parameters, Settings):
        assert all(info.description for info in model.model_fields.values()), model.__name__


def test_the_makefile_builds_the_image_the_pipeline_compiles_with():
    import re

    from pipelines.settings import Settings

    [image] = re.findall(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert image == Settings().image


def test_configs_set_only_what_differs_from_the_defaults():
    """A config that repeats a default would silently keep the old value when the default changes."""
    import yaml

    from pipelines.settings import Parameters, Settings

    spelled_out = {"backbones"}  # demo.yaml names them because its `weights` mapping does
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        cfg = load_config(path)
        for section, model in (("parameters", Parameters()), ("settings", Settings())):
            for name in set(raw.get(section) or {}) - spelled_out:
                assert getattr(getattr(cfg, section), name) != getattr(model, name), f"{path.name}: {section}.{name}"
