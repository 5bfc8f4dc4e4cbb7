"""The seed notebooks as configs: each runs end to end with `bakeoff run --config` on small real images.

Sizes, epochs and the per-class cap are overridden on the command line (as a user would for a quick try); the
recipe itself (backbones, weights, head, fine-tuning, classes) comes from the config. The dogs-vs-horses config gets
an Animals-10-style dump: Italian folder names (cane, cavallo, and one more the config must drop) and translate.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakeoff.cli import main

from support import local_run_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--image-size", "32", "--head-epochs", "3", "--finetune-epochs", "1")  # a quick try, as a user would


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, weights_mirror):
    """An isolated cwd (embedded MLflow store), feature cache, and two raw dumps of real demo images."""
    from bakeoff.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("notebooks")
    make_demo_data(str(root / "raw"), per_class=9, classes="sneaker,bag,trouser")
    make_demo_data(str(root / "animals"), per_class=9, classes="sneaker,bag,trouser")
    animals = root / "animals" / "raw-img"
    italian = {"scarpa": "cane", "borsa": "cavallo", "pantaloni": "gatto"}  # the images stand in for animals
    for demo_name, animal in italian.items():
        (animals / demo_name).rename(animals / animal)
    (root / "animals" / "translate.json").write_text(json.dumps({"cane": "dog", "cavallo": "horse", "gatto": "cat"}))
    mp = local_run_env(root, weights_mirror)
    yield root
    mp.undo()


def _run(root: Path, config: str, *extra: str) -> tuple[int, dict, Path]:
    import contextlib
    import io

    runs = root / ".bakeoff" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--config", str(ROOT / "configs" / config), *extra])
    [run_dir] = set(runs.glob("*")) - before
    return code, json.loads((run_dir / "result.json").read_text()), run_dir


def _outputs(result: dict, run_dir: Path, pattern: str) -> list[Path]:
    """This run's task outputs (the pipeline root holds every run of the workspace; its folder names the run)."""
    return list(Path(result["pipeline_root"]).glob(f"bakeoff-{run_dir.name}-*/for-loop-*-iteration-*/{pattern}"))


def _model_json(result: dict, run_dir: Path, backbone: str) -> dict:
    """model.json of one branch's finetune task, found through its backbone."""
    for path in _outputs(result, run_dir, "finetune/model/model.json"):
        info = json.loads(path.read_text())
        if info["backbone"] == backbone:
            return info
    raise AssertionError(f"no finetune output for {backbone}")


def test_vgg16_finetune_config(workspace):
    code, result, run_dir = _run(workspace, "vgg16_finetune.yaml", "--data", str(workspace / "raw" / "raw-img"), *QUICK)
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    [row] = result["rows"]
    assert row["backbone"] == "vgg16" and row["weights"] == "hed"
    model = _model_json(result, run_dir, "vgg16")
    assert model["head_kind"] == "dense" and model["hyperparameters"]["blocks"] == 1
    assert model["unfrozen_layers"] and all(name.startswith("block5") for name in model["unfrozen_layers"])
    assert model["hyperparameters"]["learning_rate"] == 1e-5 and "finetune_val_gain" in model


def test_vgg16_vs_resnet50_config(workspace):
    code, result, run_dir = _run(
        workspace, "vgg16_vs_resnet50.yaml", "--data", str(workspace / "raw" / "raw-img"), *QUICK
    )
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    singles = [row for row in result["rows"] if not row["backbone"].startswith("ensemble:")]  # (+ an ensemble row)
    assert {(row["backbone"], row["weights"]) for row in singles} == {("vgg16", "hed"), ("resnet50", "none")}
    assert result["decision"]["challenger_backbone"] == "vgg16" or not result["decision"]["promoted"]


def test_inception_mixed7_dogs_horses_config(workspace):
    code, result, run_dir = _run(
        workspace, "inception_v3_mixed7_dogs_horses.yaml", "--data", str(workspace / "animals" / "raw-img"),
        "--label-map", str(workspace / "animals" / "translate.json"), "--image-size", "75", "--head-epochs", "3",
    )  # fmt: skip
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    [row] = result["rows"]
    assert row["backbone"] == "inception_v3_mixed7" and row["pretrained"] is False
    assert result["decision"]["promoted"] is False  # random weights are never promoted
    model = _model_json(result, run_dir, "inception_v3_mixed7")
    assert model["classes"] == ["dog", "horse"] and model["cut"] == "mixed7" and model["finetuned"] is False
    [head_json] = _outputs(result, run_dir, "train-head/head/head.json")
    head = json.loads(head_json.read_text())
    assert head["kind"] == "dense" and head["hyperparameters"]["hidden"] == 1024
    assert head["hyperparameters"]["dropout"] == 0.2
    import keras

    [keras_file] = _outputs(result, run_dir, "finetune/model/model.keras")
    net = keras.models.load_model(keras_file)
    assert net.output.shape[-1] == 1 and net.layers[-1].get_config()["activation"] == "sigmoid"
    assert net.get_layer("head_hidden").units == 1024 and net.get_layer("head_dropout").rate == 0.2
