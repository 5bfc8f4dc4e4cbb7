"""Guards on the repository layout that would otherwise break users in confusing ways."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_folder_does_not_shadow_the_mlflow_package():
    """`import mlflow` from the repository root must find the real package, not ./mlflow/."""
    out = subprocess.run(
        [sys.executable, "-c", "import mlflow, sys; print(mlflow.__file__); print(hasattr(mlflow, 'start_run'))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "site-packages" in out[0]
    assert out[1] == "True"
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_core_never_imports_kfp():
    """The core library knows nothing of KFP (dependencies point downward only)."""
    offenders = [
        p.name
        for p in (ROOT / "bakeoff").rglob("*.py")
        if "cli" not in p.parts and ("import kfp" in p.read_text() or "from kfp" in p.read_text())
    ]
    assert offenders == []


def test_cli_help_is_fast_and_imports_no_tensorflow():
    code = "import sys; from bakeoff.cli import app; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
