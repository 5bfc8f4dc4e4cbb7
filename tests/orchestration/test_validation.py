"""The whole run form is checked before any work starts, every problem at once (issue 8, item 2).

Reproduced on main: `bakeoff run --backbones mobilenet_v2,resnet` ran ingest and a whole branch (~2 min) before
failing; `--weights vgg=hed` was silently ignored; an offline ImageNet download was tried. Here each is refused in
seconds, with a did-you-mean, before the run folder, the MLflow store or any KFP task exists.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from bakeoff import validation
from bakeoff.cli import main
from bakeoff.validation import Scope
from pipelines.settings import Parameters, load_config

DEMO_CLASSES = "sneaker,bag,trouser"


def _form(**values) -> dict:
    return {**Parameters().model_dump(), **values}


def _run(tmp_path: Path, demo_raw, *extra: str) -> tuple[int, float]:
    """`bakeoff run` on the demo dump with ``extra`` options; returns the exit code and the seconds taken."""
    argv = ["run", "--data", demo_raw.raw_dir, "--label-map", demo_raw.label_map, "--classes", DEMO_CLASSES]
    started = time.monotonic()
    code = main([*argv, "--workdir", str(tmp_path / "w"), *extra])
    return code, time.monotonic() - started


@pytest.fixture
def isolated(tmp_path, monkeypatch, weights_mirror):
    """cwd in tmp_path (the embedded MLflow store would appear there), the real offline weights mirror."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    return tmp_path


def test_unknown_backbone_fails_in_seconds_before_anything_is_written(isolated, demo_raw, capsys):
    code, seconds = _run(isolated, demo_raw, "--backbones", "mobilenet_v2,resnet")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "parameters.backbones: unknown backbone 'resnet' (did you mean resnet50?)" in err
    assert seconds < 10, seconds  # in-process, measured well under 1 s; main took ~2 min (ingest + a whole branch)
    assert list(isolated.iterdir()) == []  # no run folder, no .bakeoff/mlflow store, no KFP root


def test_misspelt_weights_key_is_refused_not_ignored(isolated, demo_raw, capsys):
    code, _ = _run(
        isolated, demo_raw, "--backbones", "mobilenet_v2,vgg16", "--weights", "mobilenet_v2=imagenet,vgg=hed"
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "parameters.weights: mapping key 'vgg' is not a backbone (did you mean vgg16?)" in err
    assert list(isolated.iterdir()) == []


def test_weights_that_need_an_offline_download_are_refused_up_front(isolated, demo_raw, capsys, monkeypatch):
    """resnet50 has no mirror copy and no Keras cache: `imagenet` means a download, refused here without waiting
    for a network timeout (the download host is made unresolvable, so the test is offline wherever it runs)."""
    monkeypatch.setattr(validation, "KERAS_WEIGHTS_HOST", "weights.invalid")  # RFC 6761: never resolves
    monkeypatch.setenv("KERAS_HOME", str(isolated / "keras-home"))
    code, seconds = _run(isolated, demo_raw, "--backbones", "resnet50", "--image-size", "32")
    err = capsys.readouterr().err
    assert code == 2 and seconds < 10
    assert "parameters.weights: imagenet for resnet50 needs a Keras download from weights.invalid" in err
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 is not cached" in err
    assert "BAKEOFF_WEIGHTS_URI" in err and "bakeoff weights import" in err

    # the same weights in Keras's cache resolve here: no problem left (the file's content is Keras's business)
    cache = isolated / "keras-home" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"cached")
    report = validation.validate(
        _form(data_uri=demo_raw.raw_dir, label_map_uri=demo_raw.label_map, backbones=["resnet50"], image_size=32)
    )
    assert report.problems == []


def test_every_problem_of_a_config_file_is_reported_at_once(isolated, demo_raw, capsys):
    config = isolated / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "parameters": {
                    "backbones": "mobilenet_v2,vgg61",
                    "weights": "mobilenet_v2=imagenet,vgg=hed",
                    "image_size": 16,
                    "extra_image_sizes": "64,16",
                    "val_fraction": 0.9,
                    "classes": "sneakr,bag",
                    "label_map_uri": demo_raw.label_map,
                    "model_name": "team/classifier",
                },
                "settings": {"parallelism": 0},
            }
        )
    )
    assert main(["run", "--config", str(config), "--data", demo_raw.raw_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: config {config}: 8 problems: ") and "\n" not in err
    for expected in (
        "parameters.val_fraction: Input should be less than 0.5",
        "settings.parallelism: Input should be greater than or equal to 1",
        "parameters.backbones: unknown backbone 'vgg61' (did you mean vgg16?)",
        "parameters.weights: mapping key 'vgg' is not a backbone (did you mean vgg16?)",
        "parameters.image_size: 16 px is below mobilenet_v2's minimum of 32",
        "parameters.extra_image_sizes: [16] px is below mobilenet_v2's minimum of 32",
        "parameters.model_name: 'team/classifier': MLflow model names cannot contain '/' or ':'",
        "parameters.classes: no class 'sneakr' in",
    ):
        assert expected in err, expected
    assert "(did you mean sneaker?)" in err  # class names are checked after the label map (Italian -> English)
    assert sorted(p.name for p in isolated.iterdir()) == ["bad.yaml"]


def test_data_and_label_map_are_checked_here(isolated, demo_raw, tmp_path):
    def problems(**values) -> list[str]:
        form = _form(backbones=["mobilenet_v2"], **values)
        return [str(p) for p in validation.validate(form).problems]

    assert problems(data_uri=demo_raw.raw_dir, label_map_uri=demo_raw.label_map, classes=DEMO_CLASSES) == []
    assert problems(data_uri=str(tmp_path / "missing"))[0].startswith("data_uri: no such folder or file")
    (tmp_path / "notes.txt").write_text("x")
    assert "is a file but not an archive" in problems(data_uri=str(tmp_path / "notes.txt"))[0]
    (tmp_path / "empty").mkdir()
    assert "holds no files" in problems(data_uri=str(tmp_path / "empty"))[0]
    bad_map = tmp_path / "map.json"
    bad_map.write_text("[1, 2]")
    [problem] = problems(data_uri=demo_raw.raw_dir, label_map_uri=str(bad_map))
    assert problem.startswith("label_map_uri: label map") and "mapping of old class name" in problem
    assert problems(data_uri=demo_raw.raw_dir, classes="bag") == [
        "classes: name at least 2 classes to compare, or leave it empty for all",
        f"classes: no class 'bag' in {demo_raw.raw_dir} after the label map; classes there: borsa, pantaloni, scarpa",
    ]


@pytest.mark.parametrize(
    "weights, message",
    [
        ("mobilenet_v2=imagenet,mobilenet_v2=none", "'mobilenet_v2' is given twice"),
        ("mobilenet_v2=", "mobilenet_v2= has no value"),
        ("imagenet,none,vgg16=hed", "more than one default entry (imagenet, none)"),
        ("imagenet,none", "lists several specs without backbone names"),
        ("mobilenet_v2=nosuchname", "weights 'nosuchname' for mobilenet_v2 not found"),
    ],
)
def test_weights_spec_grammar(isolated, weights, message):
    report = validation.validate(_form(backbones=["mobilenet_v2"], weights=weights), require_data=False)
    assert any(message in str(p) for p in report.problems), report.problems


def test_compile_checks_names_but_leaves_the_data_to_the_form(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--out", str(out)]) == 0  # no data: the KFP UI user fills it in
    assert main(["compile", "--out", str(out), "--backbones", "mobilenet_v2,resnet"]) == 2
    assert "did you mean resnet50?" in capsys.readouterr().err
    assert main(["compile", "--out", str(tmp_path / "q.yaml"), "--data", str(tmp_path / "missing")]) == 0
    assert not (tmp_path / "missing").exists()


def test_submit_checks_what_this_machine_reaches(s3_server, tmp_path, monkeypatch, make_image):
    """A laptop submitting to a cluster: s3:// data is checked when S3 answers, noted when it does not."""
    from bakeoff import storage

    storage.upload(make_image(tmp_path / "a.png"), "s3://bakeoff-test/raw/cat/a.png")
    here = validation.validate(_form(data_uri="s3://bakeoff-test/raw"), Scope.REACHABLE)
    assert here.problems == [] and any("weights not resolved here" in n for n in here.notes)
    missing = validation.validate(_form(data_uri="s3://bakeoff-test/typo"), Scope.REACHABLE)
    assert [str(p) for p in missing.problems] == [
        "data_uri: nothing at s3://bakeoff-test/typo; check the bucket and prefix"
    ]
    local = validation.validate(_form(data_uri="/mnt/raw"), Scope.REACHABLE)
    assert local.problems == [] and "data_uri /mnt/raw is a path on the cluster: not checked here" in local.notes

    from support import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setattr(validation, "REMOTE_CHECK_S", 3.0)
    started = time.monotonic()
    away = validation.validate(_form(data_uri="s3://bakeoff-test/raw"), Scope.REACHABLE)
    assert time.monotonic() - started < 6
    assert away.problems == [] and any(
        n.startswith("data_uri s3://bakeoff-test/raw not checked here") for n in away.notes
    )
    with pytest.raises(validation.RunFormError, match="data_uri: cannot read s3://bakeoff-test/raw"):
        validation.check(_form(data_uri="s3://bakeoff-test/raw", backbones=["mobilenet_v2"]), Scope.HERE)


def test_load_config_reports_every_type_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("parameters:\n  seed: abc\n  per_class: -1\n  typo_field: 1\n")
    with pytest.raises(validation.RunFormError) as info:
        load_config(path)
    assert sorted(p.field for p in info.value.problems) == [
        "parameters.per_class",
        "parameters.seed",
        "parameters.typo_field",
    ]
    assert "3 problems" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("application", sorted(validation.KERAS_NOTOP_FILES))
def test_keras_cache_names_are_the_files_keras_downloads(application, monkeypatch):
    """The file validation looks for is the one Keras's own loader asks for (get_file intercepted, no download)."""
    import keras
    from keras.src.utils import file_utils

    from bakeoff.backbones import REGISTRY

    asked = []

    class Asked(Exception):
        pass

    def get_file(fname=None, origin=None, **kwargs):
        asked.append(fname)
        raise Asked

    monkeypatch.setattr(file_utils, "get_file", get_file)
    bb = next(b for b in REGISTRY.values() if b.application == application)
    size = 96 if application == "MobileNetV2" else bb.min_size
    kwargs = {"include_preprocessing": True} if bb.builtin_preprocessing else {}
    with pytest.raises(Asked):
        getattr(keras.applications, application)(
            weights="imagenet", include_top=False, input_shape=(size, size, 3), **kwargs
        )
    assert Path(validation.keras_cached_weights(application, size)).name == asked[0]
