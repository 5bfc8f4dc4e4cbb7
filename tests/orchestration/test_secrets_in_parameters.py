"""Credentials never become pipeline parameters (issue 8 item 8): a run-form field with `user:password@` in a URI (or
an access key id) is refused at validation, with the other field errors, before MLflow, a run folder or a compiled
YAML exists, and without echoing the value."""

from __future__ import annotations

import pytest

from bakeoff import validation
from bakeoff.cli import main
from bakeoff.validation import Scope
from pipelines.settings import Parameters

SECRET = "Pw-7hQ2mZ9x"


def _form(**values) -> dict:
    return {**Parameters().model_dump(), **values}


@pytest.mark.parametrize(
    "field, value",
    [
        ("data_uri", f"https://alice:{SECRET}@data.example.com/raw.tar.gz"),
        ("label_map_uri", f"s3://AKIAABCDEFGHIJKLMNOP:{SECRET}@bucket/map.json"),
        ("weights", f"vgg16=https://alice:{SECRET}@weights.example.com/vgg.h5"),
    ],
)
def test_a_credential_in_any_field_is_refused_without_echoing_it(field, value):
    report = validation.validate(_form(**{"data_uri": "raw", field: value}), Scope.SYNTAX)
    assert [p.field for p in report.problems] == [field]
    assert "holds a credential" in report.problems[0].message and SECRET not in str(report.problems[0])


def test_compile_refuses_it_with_the_other_field_errors_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "pipeline.yaml"
    code = main(
        ["compile", "--out", str(out), "--data", f"http://alice:{SECRET}@host/raw", "--backbones", "mobilenet_v2,resnt"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and SECRET not in err
    assert "2 problems" in err and "parameters.data_uri: holds a credential" in err and "parameters.backbones" in err
    assert not out.exists()


def test_run_refuses_it_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["run", "--data", f"s3://alice:{SECRET}@bucket/raw", "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "parameters.data_uri: holds a credential" in err and SECRET not in err
    assert list(tmp_path.iterdir()) == []  # no workdir, no run folder, no MLflow store
