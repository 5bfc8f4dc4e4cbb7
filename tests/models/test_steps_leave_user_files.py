"""Issue 8 item 1 for the model steps: features, train-head, finetune and evaluate write only their own files.

Each step is pointed (through the real CLI) at one folder that already holds the user's data: the dataset itself
and an unrelated file. Every step must leave each of those files byte for byte as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bakeoff.cli import main


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_model_step_writing_into_the_dataset_folder_leaves_its_files_alone(tiny_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("BAKEOFF_NO_PROGRESS", "1")
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", "off")
    folder = str(tiny_dataset)
    (tiny_dataset / "notes.txt").write_text("the user's notes\n")
    before = _snapshot(tiny_dataset)
    steps = [
        [
            "features",
            folder,
            "--out",
            folder,
            "--backbone",
            "mobilenet_v2",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--cache",
            str(tmp_path / "cache"),
        ],
        ["train-head", folder, "--out", folder, "--kind", "logreg"],
        ["finetune", folder, folder, "--out", folder, "--epochs", "0"],
        ["evaluate", folder, folder, "--out", folder, "--bootstrap", "10"],
    ]
    for args in steps:
        assert main(args) == 0, args
        after = _snapshot(tiny_dataset)
        assert {k: after.get(k) for k in before} == before, args[0]
    new = set(_snapshot(tiny_dataset)) - set(before)
    assert {"features.npz", "features.json", "head.keras", "head.json", "model.keras", "model.json"} <= new
