"""The run form on the command line: every `Parameters` field is an option of run/compile/submit/schedule.

The options are derived from `pipelines.settings.Parameters` (bakeoff/cli/run_form.py), like the KFP run form
(pipelines/factory.py), so these tests loop over the model's fields instead of naming options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import yaml
from kfp_ir import parse_compiled

from bakeoff import stats
from bakeoff.cli import app, main
from bakeoff.cli.run_form import SHORT_NAMES, option_names
from pipelines.settings import Parameters

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("run", "compile", "submit", "schedule")
FIELDS = Parameters.model_fields
CHOICE_FIELDS = [name for name, info in FIELDS.items() if get_origin(info.annotation) is Literal]


VALID_OTHER = {
    "image_size": ("64", 64),
    "extra_image_sizes": ("96, 128", [96, 128]),
    "classes": ("dog,horse", "dog,horse"),
}


def _click_command(name: str):
    import typer

    return typer.main.get_command(app).commands[name]


def _other_value(name: str):
    """A valid value for the field that differs from its default, as (command-line text, expected value).

    Valid for the run-form validation too (bakeoff.validation): an image size the backbones accept, two classes.
    """
    info = FIELDS[name]
    default = info.get_default(call_default_factory=True)
    if name in VALID_OTHER:
        return VALID_OTHER[name]
    if name in CHOICE_FIELDS:
        choice = next(c for c in get_args(info.annotation) if c != default)
        return choice, choice
    if get_origin(info.annotation) is list:
        return "resnet50, efficientnet_v2_b0", ["resnet50", "efficientnet_v2_b0"]
    if info.annotation is int:
        return str(default + 3), default + 3
    if info.annotation is float:
        return str(default / 2), default / 2
    return f"{name}-from-the-command-line", f"{name}-from-the-command-line"


def _compiled_defaults(path: Path) -> dict:
    """The run form's parameters of a compiled pipeline: {name: (default, description)}."""
    from google.protobuf import json_format

    spec, _ = parse_compiled(path)
    return {
        name: (json_format.MessageToDict(p)["defaultValue"], p.description)
        for name, p in spec.root.input_definitions.parameters.items()
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_every_parameter_is_an_option_with_its_description(command):
    options = {p.name: p for p in _click_command(command).params}
    for name, info in FIELDS.items():
        assert name in options, f"`bakeoff {command}` has no option for {name}"
        option = options[name]
        assert f"--{name.replace('_', '-')}" in option.opts
        assert option.default is None  # "not given": the config file and the defaults apply
        assert info.description and info.description in option.help
    assert set(SHORT_NAMES) <= set(FIELDS)


def test_help_teaches_each_parameter(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the text is not wrapped apart
    assert main(["submit", "--help"]) == 0
    out = capsys.readouterr().out
    for name, info in FIELDS.items():
        assert option_names(name)[0] in out
        assert info.description.split(";")[0] in out, name
    assert "REQUIRED" in out and "(default: 0.15)" in out and "(default: mobilenet_v2,vgg16)" in out
    assert "mcnemar|mcnemar-midp|bootstrap" in out


def test_choices_are_the_libraries_own():
    from bakeoff.features import PRECISIONS
    from bakeoff.heads import HEAD_KINDS

    assert get_args(FIELDS["gate_test"].annotation) == stats.TESTS
    assert get_args(FIELDS["head_kind"].annotation) == HEAD_KINDS
    assert get_args(FIELDS["precision"].annotation) == PRECISIONS
    assert set(CHOICE_FIELDS) == {"flip", "gate_test", "head_kind", "precision"}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("field", CHOICE_FIELDS)
def test_a_bad_choice_is_a_usage_error_before_any_work(command, field, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = {
        "submit": ["--host", "http://127.0.0.1:9"],
        "schedule": ["--host", "http://127.0.0.1:9", "--cron", "0 3 * * 1"],
    }
    argv = [command, *extra.get(command, []), "--data", "raw", option_names(field)[0], "coinflip"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "coinflip" in err and all(choice in err for choice in get_args(FIELDS[field].annotation))
    assert list(tmp_path.iterdir()) == []  # nothing compiled, no run folder


def test_every_parameter_from_the_command_line_reaches_the_compiled_run_form(tmp_path):
    argv, expected = ["compile", "--out", str(tmp_path / "p.yaml")], {}
    for name in FIELDS:
        text, value = _other_value(name)
        argv += [option_names(name)[-1], text]  # the --kebab-case spelling of every field
        expected[name] = value
    assert main(argv) == 0
    compiled = _compiled_defaults(tmp_path / "p.yaml")
    assert set(compiled) == set(FIELDS)  # exactly the run form: no more, no less
    for name, value in expected.items():
        default, description = compiled[name]
        assert default == value, name
        assert description == FIELDS[name].description


def test_precedence_defaults_then_config_then_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "parameters": {"seed": 7, "image_size": 64, "gate_test": "bootstrap", "backbones": "vgg16"},
                "settings": {"parallelism": 4},
            }
        )
    )
    out = tmp_path / "p.yaml"
    argv = ["compile", "--out", str(out), "--config", str(config), "--image-size", "96", "--gate-test", "mcnemar-midp"]
    assert main([*argv, "--parallelism", "5"]) == 0
    compiled = {name: default for name, (default, _) in _compiled_defaults(out).items()}
    assert compiled["image_size"] == 96 and compiled["gate_test"] == "mcnemar-midp"  # command line wins
    assert compiled["seed"] == 7 and compiled["backbones"] == ["vgg16"]  # the file beats the defaults
    assert compiled["batch_size"] == 32 and compiled["val_fraction"] == 0.15  # defaults where nobody spoke
    spec, _ = parse_compiled(out)
    loop = spec.components["comp-exit-handler-1"].dag.tasks["for-loop-2"]
    assert loop.iterator_policy.parallelism_limit == 5  # settings: same precedence
    assert main(["compile", "--out", str(out), "--config", str(config)]) == 0
    spec, _ = parse_compiled(out)
    assert spec.components["comp-exit-handler-1"].dag.tasks["for-loop-2"].iterator_policy.parallelism_limit == 4


def test_bad_setting_from_the_command_line_is_one_line_error(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path / "p.yaml"), "--parallelism", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config") and "parallelism" in err and "\n" not in err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("spelling", [["--data", "--label-map"], ["--data-uri", "--label-map-uri"]])
def test_old_and_field_spellings_of_the_data_options(tmp_path, spelling):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--out", str(out), spelling[0], "s3://b/raw", spelling[1], "s3://b/map.json"]) == 0
    compiled = _compiled_defaults(out)
    assert compiled["data_uri"][0] == "s3://b/raw" and compiled["label_map_uri"][0] == "s3://b/map.json"


def test_run_hands_the_merged_parameters_to_the_pipeline(tmp_path, monkeypatch, capsys, weights_mirror):
    """`bakeoff run` writes the merged config before it starts the pipeline; data that passes the run-form
    checks but holds no image then fails fast in the pipeline's ingest."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    for name in ("cat", "dog"):  # two class folders, no image: valid to the run-form checks, not to ingest
        (tmp_path / "raw" / name).mkdir(parents=True)
        (tmp_path / "raw" / name / "notes.txt").write_text("not an image")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"parameters": {"seed": 7, "image_size": 64, "experiment": "from-file"}}))
    argv = ["run", "--config", str(config), "--data", str(tmp_path / "raw"), "--image-size", "96"]
    argv += ["--backbones", "mobilenet_v2", "--batch-size", "8", "--test-fraction", "0.2"]
    assert main([*argv, "--workdir", str(tmp_path / "w")]) == 1  # a failed pipeline, not a usage error
    assert "task 'ingest' failed" in capsys.readouterr().err
    [written] = (tmp_path / "w" / "runs").glob("*/config.json")
    params = json.loads(written.read_text())["parameters"]
    assert params == {
        **Parameters().model_dump(),
        "data_uri": str(tmp_path / "raw"),
        "backbones": ["mobilenet_v2"],
        "seed": 7,
        "experiment": "from-file",
        "image_size": 96,
        "batch_size": 8,
        "test_fraction": 0.2,
    }
