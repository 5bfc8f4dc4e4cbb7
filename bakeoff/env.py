"""The ONE module that reads bakeoff's environment: every variable, what it means, its default, one accessor each.

Why one module: a variable's name, its default and how an empty value is treated were repeated across the
code base (four copies of the cache-folder rule alone). Here each variable is declared once in
:data:`VARIABLES` (the README's Configuration table lists exactly these; a test compares them), and every
other module calls an accessor. Accessors read the environment on every call, so a test's ``monkeypatch``
or a parent process that sets a variable before starting a step is always honoured. An empty value counts
as unset everywhere.

Some variables are read by a library, not by bakeoff (boto3's credentials, MLflow's login, kfp's token
file): they are listed with ``reader`` naming that library, so the table stays complete, but have no accessor.
``KF_PIPELINES_ENDPOINT``, ``MLFLOW_TRACKING_URI`` (as ``--tracking-uri``), ``BAKEOFF_WEIGHTS_URI`` (as
``--mirror``) and ``BAKEOFF_CACHE_URI`` (as ``--cache``) are also read by the CLI options themselves through
Typer's ``envvar=`` (so ``--help`` shows them); those options take the names from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, what it does, what applies when it is unset, who reads it."""

    name: str
    meaning: str
    default: str
    reader: str = "bakeoff"

    def value(self) -> str | None:
        """The variable's value, or None when unset or empty."""
        return os.environ.get(self.name) or None


VARIABLES: dict[str, Variable] = {}


def _declare(name: str, meaning: str, default: str, reader: str = "bakeoff") -> Variable:
    VARIABLES[name] = Variable(name, meaning, default, reader)
    return VARIABLES[name]


# --- weights, caches, progress (core)
WEIGHTS_URI = _declare(
    "BAKEOFF_WEIGHTS_URI",
    "weights mirror (folder or `s3://` prefix) that `imagenet` and named weights resolve in first",
    "no mirror: `imagenet` falls back to Keras's download",
)
CACHE_URI = _declare(
    "BAKEOFF_CACHE_URI",
    "feature cache: per-image vectors keyed by content, backbone, weights and size (folder or `s3://`)",
    "`$XDG_CACHE_HOME/bakeoff/features`",
)
DECODED_CACHE = _declare(
    "BAKEOFF_DECODED_CACHE",
    "decoded, resized images: one uint8 tensor per dataset content and input size, read by features, fine-tuning, "
    "evaluation and the gate (local folder; `off` decodes the files every time)",
    "`$XDG_CACHE_HOME/bakeoff/decoded`",
)
IMAGE_CACHE = _declare(
    "BAKEOFF_IMAGE_CACHE",
    "local copies of `s3://` images, named by content hash (local folder)",
    "`$XDG_CACHE_HOME/bakeoff/images`",
)
WEIGHTS_CACHE = _declare(
    "BAKEOFF_WEIGHTS_CACHE",
    "local copies of `s3://` weight files (local folder)",
    "`$XDG_CACHE_HOME/bakeoff/weights`",
)
XDG_CACHE_HOME = _declare("XDG_CACHE_HOME", "root of the four caches above", "`~/.cache`")
KERAS_HOME = _declare(
    "KERAS_HOME",
    "Keras's folder; run-form validation looks in its `models/` for cached ImageNet downloads",
    "`~/.keras`",
    reader="keras (and bakeoff)",
)
NO_PROGRESS = _declare(
    "BAKEOFF_NO_PROGRESS",
    "`1` hides progress bars (`bakeoff run` sets it for its tasks, whose output goes to a log file)",
    "bars shown",
)
# --- tracking
MLFLOW_TRACKING_URI = _declare(
    "MLFLOW_TRACKING_URI", "MLflow tracking server or DB", "embedded SQLite under `.bakeoff/mlflow`"
)
GIT_COMMIT = _declare(
    "BAKEOFF_GIT_COMMIT", "code version tagged on every MLflow run (container builds set it)", "the checkout's git HEAD"
)
MLFLOW_TRACKING_USERNAME = _declare(
    "MLFLOW_TRACKING_USERNAME", "login of a tracking server with auth", "no auth", reader="mlflow"
)
MLFLOW_TRACKING_PASSWORD = _declare("MLFLOW_TRACKING_PASSWORD", "its password", "no auth", reader="mlflow")
# --- S3
AWS_ENDPOINT_URL_S3 = _declare(
    "AWS_ENDPOINT_URL_S3", "S3 endpoint (MinIO, moto, ...); wins over `AWS_ENDPOINT_URL`", "`AWS_ENDPOINT_URL`"
)
AWS_ENDPOINT_URL = _declare("AWS_ENDPOINT_URL", "S3 endpoint for data, weights and caches", "AWS S3")
AWS_DEFAULT_REGION = _declare("AWS_DEFAULT_REGION", "S3 region; wins over `AWS_REGION`", "`AWS_REGION`")
AWS_REGION = _declare("AWS_REGION", "S3 region", "`us-east-1`")
AWS_ACCESS_KEY_ID = _declare("AWS_ACCESS_KEY_ID", "S3 credentials", "boto3's credential chain", reader="boto3")
AWS_SECRET_ACCESS_KEY = _declare("AWS_SECRET_ACCESS_KEY", "S3 credentials", "boto3's credential chain", reader="boto3")
# --- Kubeflow Pipelines
KF_PIPELINES_ENDPOINT = _declare(
    "KF_PIPELINES_ENDPOINT",
    "Kubeflow Pipelines API for `submit` / `schedule`",
    "`--host` is required",
    reader="CLI option `--host`",
)
KF_PIPELINES_TOKEN = _declare(
    "KF_PIPELINES_TOKEN", "bearer token for that API", "kfp's own credentials (in-cluster service account)"
)
# --- library start-up noise (the CLI sets these when unset, before TensorFlow or MLflow is imported)
TF_CPP_MIN_LOG_LEVEL = _declare(
    "TF_CPP_MIN_LOG_LEVEL",
    "TensorFlow's C++ log threshold; the CLI sends what passes it to its log file, not the terminal",
    "`1` (INFO hidden) in the CLI",
    reader="tensorflow",
)
MLFLOW_CONFIGURE_LOGGING = _declare(
    "MLFLOW_CONFIGURE_LOGGING",
    "whether MLflow adds its own stderr log handler; the CLI logs MLflow to its log file instead",
    "`false` in the CLI",
    reader="mlflow",
)


# ---------------------------------------------------------------------------------------- accessors


def cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/bakeoff/<kind>`` (``~/.cache/bakeoff/<kind>`` when unset): the default of every cache."""
    return Path(XDG_CACHE_HOME.value() or os.path.expanduser("~/.cache")) / "bakeoff" / kind


def weights_mirror_uri() -> str | None:
    """The weights mirror (folder or s3:// prefix), or None."""
    return WEIGHTS_URI.value()


def keras_home() -> str:
    """Keras's home folder (``$KERAS_HOME``, else ``~/.keras``), where it caches downloaded weights under models/."""
    return KERAS_HOME.value() or os.path.join(os.path.expanduser("~"), ".keras")


def feature_cache_uri() -> str:
    """Where extracted feature vectors are cached (may be s3://)."""
    return CACHE_URI.value() or str(cache_dir("features"))


def decoded_cache_dir() -> str | None:
    """Where decoded, resized image tensors are kept; None when ``$BAKEOFF_DECODED_CACHE`` turns them off."""
    value = DECODED_CACHE.value()
    if value and value.lower() in ("off", "0", "none", "false"):
        return None
    return value or str(cache_dir("decoded"))


def image_cache_dir() -> Path:
    """Local, content-addressed copies of s3:// images."""
    return Path(IMAGE_CACHE.value() or cache_dir("images"))


def weights_cache_dir() -> Path:
    """Local copies of s3:// weight files."""
    return Path(WEIGHTS_CACHE.value() or cache_dir("weights"))


def progress_enabled() -> bool:
    """False when ``$BAKEOFF_NO_PROGRESS`` is set to anything but 0/false/no/off."""
    value = NO_PROGRESS.value()
    return value is None or value.lower() in ("0", "false", "no", "off")


def tracking_uri() -> str | None:
    """``$MLFLOW_TRACKING_URI``, or None (tracking then uses its embedded store)."""
    return MLFLOW_TRACKING_URI.value()


def git_commit() -> str | None:
    """``$BAKEOFF_GIT_COMMIT``, or None (tracking then asks git)."""
    return GIT_COMMIT.value()


def s3_endpoint_url() -> str | None:
    """The S3 endpoint boto3 should use (``AWS_ENDPOINT_URL_S3`` first), or None for AWS itself."""
    return AWS_ENDPOINT_URL_S3.value() or AWS_ENDPOINT_URL.value()


def aws_region() -> str | None:
    """The S3 region (``AWS_DEFAULT_REGION`` first), or None."""
    return AWS_DEFAULT_REGION.value() or AWS_REGION.value()


def kfp_token() -> str | None:
    """Bearer token for the Kubeflow Pipelines API, or None (kfp then uses its own credentials)."""
    return KF_PIPELINES_TOKEN.value()


QUIETED_BY_CLI: set[str] = set()  # what quiet_libraries set: a child whose output goes to a log gets them unset


def quiet_libraries() -> None:
    """Keep TensorFlow's and MLflow's start-up chatter off the terminal: set their knobs when the user has not.

    Must run before TensorFlow is imported (it reads ``TF_CPP_MIN_LOG_LEVEL`` once, at import); MLflow then
    leaves its loggers to ``bakeoff.cli.logs``, which writes them to the CLI's log file.
    """
    for variable, value in ((TF_CPP_MIN_LOG_LEVEL, "1"), (MLFLOW_CONFIGURE_LOGGING, "false")):
        if variable.value() is None:
            os.environ[variable.name] = value
            QUIETED_BY_CLI.add(variable.name)


def cli_log_path() -> Path:
    """The CLI's log file (library start-up output, warnings): under the cache root, beside the caches."""
    return cache_dir("logs") / "bakeoff.log"


def snapshot() -> dict[str, str]:
    """A copy of the whole environment: for a child process's ``env=`` and for scrubbing secret values from logs.

    Not ``dict(os.environ)``: that lists the keys, then reads each, and a variable another thread removes in
    between (MLflow's telemetry thread does) raised KeyError in a pipeline step. Listing the keys is atomic; a key
    gone by the time it is read is left out.
    """
    return {key: value for key in list(os.environ) if (value := os.environ.get(key)) is not None}


def reference_table() -> str:
    """The README's Configuration table: every variable above (``python -m bakeoff.env`` prints it; a test checks)."""
    rows = ["| variable | meaning | when unset | read by |", "|---|---|---|---|"]
    rows += [f"| `{v.name}` | {v.meaning} | {v.default} | {v.reader} |" for v in VARIABLES.values()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
