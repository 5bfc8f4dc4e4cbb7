"""components.validate: the pipeline's first step checks the form a KFP UI user typed, every problem at once."""

from __future__ import annotations

import inspect

import pytest

from bakeoff.validation import RunFormError
from components.validate import validate
from pipelines.settings import Parameters


def _form(**values) -> dict:
    return {**Parameters().model_dump(), **values}


def test_its_parameters_are_exactly_the_run_form():
    """A new Parameters field must reach the check: the component lists each one (and the KFP run id)."""
    assert list(inspect.signature(validate).parameters) == [*Parameters.model_fields, "kfp_run_id"]


def test_a_good_form_returns_the_kfp_run_id(weights_mirror, monkeypatch, tmp_path, make_image):
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    for name in ("cat", "dog"):
        make_image(tmp_path / "raw" / name / "a.png")
    form = _form(data_uri=str(tmp_path / "raw"), backbones=["mobilenet_v2", "vgg16"], weights="vgg16=hed")
    assert validate(**form, kfp_run_id="run-42") == "run-42"


def test_what_the_kfp_form_lets_through_is_caught_here(tmp_path, capsys, weights_mirror, monkeypatch):
    """KFP checks a parameter's type only: ranges, choices and names are this step's job."""
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    form = _form(
        data_uri=str(tmp_path / "nothing-here"),
        val_fraction=0.9,
        gate_test="coinflip",
        backbones=["mobilenet_v2", "resnet"],
        weights="mobilenet_v2=imagenet,vgg=hed",
    )
    with pytest.raises(RunFormError) as info:
        validate(**form, kfp_run_id="run-43")
    fields = sorted(p.field for p in info.value.problems)
    assert fields == ["backbones", "data_uri", "gate_test", "val_fraction", "weights"]
    assert "\n" not in str(info.value) and "did you mean resnet50?" in str(info.value)
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("run form: ")]) == 5
