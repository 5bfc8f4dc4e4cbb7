"""`bakeoff ingest` and `bakeoff demo-data` through the real CLI entry point: exit codes and one-line errors."""

from __future__ import annotations

import json

import pytest

from bakeoff.cli import main
from bakeoff.manifest import read_manifest


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("error: ")
    return err


def test_ingest_cli_end_to_end(tmp_path, make_dump, capsys):
    make_dump(tmp_path / "raw" / "raw-img", {"cane": 5, "cavallo": 5, "gatto": 5})
    (tmp_path / "map.yaml").write_text("cane: dog\ncavallo: horse\n")
    code = main(
        [
            "ingest",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "ds"),
            "--label-map",
            str(tmp_path / "map.yaml"),
            "--classes",
            "dog,horse",
            "--per-class",
            "4",
            "--val",
            "0.25",
            "--test",
            "0.25",
            "--seed",
            "5",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ingested 8 images in 2 classes (train 4, val 2, test 2)" in out
    df = read_manifest(tmp_path / "ds")
    assert sorted(df["label"].unique()) == ["dog", "horse"]
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert card["seed"] == 5 and card["per_class"] == 4 and card["excluded_by_classes"] == {"gatto": 5}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--classes", "cane"], "need at least 2 classes to split"),
        (["--val", "0.6", "--test", "0.6"], "must be >= 0 and add up to less than 1"),
        (["--label-map", "{missing}"], "cannot read"),
        (["--label-map", "{badmap}"], "must be a mapping of old class name -> new class name"),
        (["--labels-csv", "{badcsv}"], "needs a header with columns path,label"),
        (["--per-class", "0"], "--per-class must be at least 1"),
    ],
)
def test_ingest_cli_usage_errors_exit_2_with_one_line(tmp_path, make_dump, capsys, extra, message):
    make_dump(tmp_path / "raw", {"cane": 4, "gatto": 4})
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    extra = [
        e.format(missing=tmp_path / "nope.json", badmap=tmp_path / "bad.yaml", badcsv=tmp_path / "bad.csv")
        for e in extra
    ]
    code = main(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--no-progress", *extra])
    assert code == 2
    assert message in _error_line(capsys)


def test_ingest_cli_too_small_class_and_missing_source(tmp_path, make_dump, capsys):
    make_dump(tmp_path / "raw", {"cane": 4, "gatto": 1})
    assert main(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    assert "class 'gatto' has only 1 image(s)" in _error_line(capsys)
    assert main(["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    assert "source not found" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["ingest", str(tmp_path / "empty"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    assert "no files found in" in _error_line(capsys)
    assert main(["ingest", str(tmp_path / "raw"), "--no-progress"]) == 2  # --out is required (click usage error)
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "raw"), "--no-progress"]) == 2
    assert "--out must not be the source folder" in _error_line(capsys)


def test_ingest_progress_bar_runs(tmp_path, make_dump, capsys):
    make_dump(tmp_path / "raw", {"cane": 3, "gatto": 3})
    assert main(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "ds")]) == 0
    captured = capsys.readouterr()
    assert "6/6" in captured.err and "files/s" in captured.err  # the bar goes to stderr, stdout stays clean
    assert "6/6" not in captured.out
    assert main(["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    assert "6/6" not in capsys.readouterr().err


def test_help_teaches(capsys):
    assert main(["ingest", "--help"]) == 0
    text = capsys.readouterr().out
    for words in ("--label-map", "--per-class", "--labels-csv", "manifest.parquet", "rejected.csv", "s3://", "Example"):
        assert words in text
    assert main(["demo-data", "--help"]) == 0
    assert "dataset-fashion-mnist" in capsys.readouterr().out


def test_demo_data_missing_dataset_says_how_to_install(tmp_path, monkeypatch, capsys):
    import bakeoff.demo_data as demo

    monkeypatch.setattr(demo, "FASHION_MNIST_DIR", tmp_path / "nothing-here")
    assert main(["demo-data", "--out", str(tmp_path / "demo")]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in _error_line(capsys)
    assert main(["demo-data", "--out", str(tmp_path / "demo"), "--classes", "gatto,cane"]) == 2
    assert "unknown demo classes" in _error_line(capsys)
