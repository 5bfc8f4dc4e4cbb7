"""What flows between the steps, named once: file names, MLflow artifact paths and tag keys, typed readers of
the step JSONs, and the promotion gate's decision record.

Why one module: the same names were spelled in the step that writes a file, the step that reads it, the MLflow
logging and the KFP components; a typo in one place only showed up as an empty MLflow column. Everything here is
import-light (no tensorflow, mlflow or kfp), so the CLI, the components and the tests can all use it.

The readers accept what the steps write and fail with ONE line naming the file and the missing key, instead of a
``KeyError`` three steps later. They read the keys the code uses; the JSON files hold more (for humans and MLflow).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from bakeoff import storage
from bakeoff.errors import BakeoffError

# ------------------------------------------------------------------------------------------ files between the steps
# dataset folder (ingest)
MANIFEST_NAME = "manifest.parquet"
REJECTED_NAME = "rejected.csv"
CARD_JSON_NAME = "card.json"
CARD_MD_NAME = "card.md"
# features folder
FEATURES_NPZ = "features.npz"
FEATURES_JSON = "features.json"
# head folder
HEAD_KERAS = "head.keras"
HEAD_JSON = "head.json"
HEAD_SEARCH_MD = "search.md"  # train-head with kind "search": every fit tried and the one kept
# model folder (finetune)
MODEL_KERAS = "model.keras"
MODEL_JSON = "model.json"
# evaluation folder
METRICS_JSON = "metrics.json"
REPORT_JSON = "classification_report.json"
PREDICTIONS = "predictions.parquet"
VAL_PREDICTIONS = "val_predictions.parquet"  # the same columns for the val split (an ensemble chooses on them)
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc.png"
ERROR_REPORT_HTML = "error_report.html"  # worst test mistakes, confused pairs, per-class numbers (bakeoff.insight)
EVALUATION_FILES = (METRICS_JSON, REPORT_JSON, PREDICTIONS, VAL_PREDICTIONS, CONFUSION_PNG, ROC_PNG, ERROR_REPORT_HTML)
# insight folder (after selection: the chosen candidate's learning curve and suspected label errors)
LEARNING_CURVE_CSV = "learning_curve.csv"
LEARNING_CURVE_MD = "learning_curve.md"
LEARNING_CURVE_PNG = "learning_curve.png"
LEARNING_CURVE_HTML = "learning_curve.html"
LABEL_ISSUES_CSV = "label_issues.csv"  # path, given_label, suggested_label, score, split, sha256
LABEL_ISSUES_HTML = "label_issues.html"
INSIGHT_JSON = "insight.json"
INSIGHT_FILES = (
    LEARNING_CURVE_CSV,
    LEARNING_CURVE_MD,
    LEARNING_CURVE_PNG,
    LEARNING_CURVE_HTML,
    LABEL_ISSUES_CSV,
    LABEL_ISSUES_HTML,
    INSIGHT_JSON,
)
# predictions.parquet, one row per test image in manifest order:
#   sha256, label, predicted, correct   (the first four, in this order: the gate pairs images by sha256)
#   path                                the image's original path in the raw dump (the manifest's ``source``)
#   prob_<class>                        one probability per class, in the model's class order
#   top_1 .. top_k                      class names by falling probability, k = min(TOP_K, number of classes)
PROB_PREFIX = "prob_"  # predictions.parquet (and the pyfunc's output): one probability column per class
PATH_COLUMN = "path"
TOP_PREFIX = "top_"
TOP_K = 3


def prob_column(class_name: str) -> str:
    """The predictions column holding P(class_name)."""
    return f"{PROB_PREFIX}{class_name}"


def top_column(rank: int) -> str:
    """The predictions column holding the class ranked ``rank`` (1 = the prediction)."""
    return f"{TOP_PREFIX}{rank}"


# ------------------------------------------------------------------------------------------ MLflow artifact paths
DATASET_ARTIFACTS = "dataset"  # parent run: card.md, card.json, rejected.csv, splits.parquet
SPLITS_ARTIFACT = f"{DATASET_ARTIFACTS}/splits.parquet"  # sha256, label, split of the run's dataset
EVALUATION_ARTIFACTS = "evaluation"  # candidate run: EVALUATION_FILES
PREDICTIONS_ARTIFACT = f"{EVALUATION_ARTIFACTS}/{PREDICTIONS}"
SPLIT_PREDICTIONS = {"test": PREDICTIONS, "val": VAL_PREDICTIONS}  # split -> its predictions file
INSIGHT_ARTIFACTS = "insight"  # parent run: INSIGHT_FILES (the card under dataset/ then counts the label issues)
CONFIG_ARTIFACTS = "config"  # candidate run: features.json, head.json (+ search.md), model.json
MODEL_ARTIFACT = "model"  # the logged pyfunc model's name
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
GATE_REPORT_MD = "gate_report.md"
GATE_DECISION_JSON = "gate_decision.json"

# ------------------------------------------------------------------------------------------ MLflow tags
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: nests a candidate run under its pipeline run
KIND_TAG = "bakeoff.kind"
KIND_PIPELINE = "pipeline"
KIND_CANDIDATE = "candidate"
DATASET_HASH_TAG = "bakeoff.dataset_hash"
MANIFEST_URI_TAG = "bakeoff.manifest_uri"
DATASET_URI_TAG = "bakeoff.dataset_uri"
GIT_COMMIT_TAG = "bakeoff.git_commit"
VERSION_TAG = "bakeoff.version"
KFP_RUN_ID_TAG = "bakeoff.kfp_run_id"
CLASSES_TAG = "bakeoff.classes"
BACKBONE_TAG = "bakeoff.backbone"
WEIGHTS_PRETRAINED_TAG = "bakeoff.weights_pretrained"
BEST_BACKBONE_TAG = "bakeoff.best_backbone"
MODEL_NAME_TAG = "bakeoff.model_name"
MODEL_VERSION_TAG = "bakeoff.model_version"
MODEL_URI_TAG = "bakeoff.model_uri"
GATE_TAG_PREFIX = "bakeoff.gate."  # + a GateDecision field name
GATE_CHALLENGER_TAG = f"{GATE_TAG_PREFIX}challenger_run_id"  # set once a decision is recorded on a pipeline run
FAILURE_TAG = "bakeoff.failure"  # why a pipeline run (and its candidates) ended FAILED
TASK_KEY_TAG = "bakeoff.task_key"  # a candidate's key within its pipeline run (the backbone): retries reuse the run
ENSEMBLE_MEMBERS_TAG = "bakeoff.ensemble_members"  # an ensemble candidate: its members' run ids, comma-separated
# the registry-wide lock (a registered model named <model>.lock) carries these
LOCK_OWNER_TAG = "bakeoff.lock_owner"
LOCK_EXPIRES_TAG = "bakeoff.lock_expires"  # seconds since the epoch; renewed by the holder's heartbeat
LOCK_HOLDER_TAG = "bakeoff.lock_holder"  # who, for people: "pipeline run <id> (KFP run <id>)" or "bakeoff promote ..."
LOCK_HOST_TAG = "bakeoff.lock_host"
LOCK_PID_TAG = "bakeoff.lock_pid"

# registered model versions: tags and aliases
VERSION_RUN_TAG = "run"
VERSION_BACKBONE_TAG = "backbone"
VERSION_WEIGHTS_PRETRAINED_TAG = "weights_pretrained"
VERSION_DATASET_HASH_TAG = "dataset_hash"
VERSION_TEST_ACCURACY_TAG = "test_accuracy"
VERSION_PIPELINE_RUN_TAG = "pipeline_run"  # the parent run whose gate registered this version
VERSION_GATE_TAG = "gate"  # VERSION_GATE_PROMOTED | VERSION_GATE_CHALLENGER
VERSION_GATE_PROMOTED = "promoted"
VERSION_GATE_CHALLENGER = "challenger"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


# ------------------------------------------------------------------------------------------ typed step JSON readers
_Info = TypeVar("_Info", bound="StepInfo")


@dataclass(frozen=True)
class StepInfo:
    """Base of the readers: ``FILE`` in a step's folder, written by ``WRITER``; ``REQUIRED`` keys must be set."""

    FILE: ClassVar[str] = ""
    WRITER: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls: type[_Info], folder: str) -> _Info:
        """Read ``folder/FILE`` (local or s3://); one-line BakeoffError when it is missing or lacks a key."""
        uri = storage.join(folder, cls.FILE)
        if not storage.exists(uri):
            raise BakeoffError(f"missing {uri}; run `{cls.WRITER}` first")
        return cls.from_dict(storage.read_json(uri), source=uri)

    @classmethod
    def read_if_present(cls: type[_Info], folder: str) -> _Info | None:
        """Like :meth:`read`, but None when the file does not exist (for steps whose output is optional)."""
        return cls.read(folder) if storage.exists(storage.join(folder, cls.FILE)) else None

    @classmethod
    def from_dict(cls: type[_Info], data: Any, source: str | None = None) -> _Info:
        """Build from the parsed JSON; ``source`` names the file in errors."""
        source = source or cls.FILE
        if not isinstance(data, Mapping):
            raise BakeoffError(f"{source} is not a JSON object; re-run `{cls.WRITER}`")
        for key in cls.REQUIRED:
            if data.get(key) in (None, "", [], {}):
                raise BakeoffError(f"{source} lacks {key!r}; re-run `{cls.WRITER}`")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names and v is not None}
        try:
            return cls(**values)._checked(source)
        except (TypeError, ValueError) as exc:
            raise BakeoffError(f"{source} has a malformed value ({exc}); re-run `{cls.WRITER}`") from exc

    def _checked(self: _Info, source: str) -> _Info:
        return self


def _classes(value: Any) -> tuple[str, ...]:
    return tuple(str(c) for c in value)


def _times(value: Any) -> tuple[int, ...]:
    return tuple(int(t) for t in value)


@dataclass(frozen=True)
class FeaturesInfo(StepInfo):
    """``features.json``: which backbone/weights/size produced the vectors, and how fast."""

    FILE: ClassVar[str] = FEATURES_JSON
    WRITER: ClassVar[str] = "bakeoff features"
    REQUIRED: ClassVar[tuple[str, ...]] = ("backbone", "image_size")

    backbone: str
    image_size: int
    weights: Mapping[str, Any] = field(default_factory=dict)
    cut: str | None = None
    feature_dim: int | None = None
    classes: tuple[str, ...] = ()
    dataset_hash: str | None = None
    images_per_s: float | None = None

    def _checked(self, source: str) -> FeaturesInfo:
        return dataclasses.replace(self, image_size=int(self.image_size), classes=_classes(self.classes))


@dataclass(frozen=True)
class HeadInfo(StepInfo):
    """``head.json``: the head's kind, hyperparameters, classes and history, plus the features' identity."""

    FILE: ClassVar[str] = HEAD_JSON
    WRITER: ClassVar[str] = "bakeoff train-head"
    REQUIRED: ClassVar[tuple[str, ...]] = ("backbone", "classes")

    backbone: str
    classes: tuple[str, ...]
    kind: str = ""
    weights: Mapping[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    cut: str | None = None
    tta: bool = False  # the search chose flip test-time averaging: the servable model averages image and mirror
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, list] = field(default_factory=dict)
    epoch_end_ms: tuple[int, ...] = ()  # wall-clock end of each history epoch (ms); MLflow logs the curves at it

    def _checked(self, source: str) -> HeadInfo:
        return dataclasses.replace(
            self, classes=_classes(self.classes), tta=bool(self.tta), epoch_end_ms=_times(self.epoch_end_ms)
        )


@dataclass(frozen=True)
class ModelInfo(StepInfo):
    """``model.json``: what a raw-pixels-in model needs to be used (classes, input size) and how it was made."""

    FILE: ClassVar[str] = MODEL_JSON
    WRITER: ClassVar[str] = "bakeoff finetune"
    REQUIRED: ClassVar[tuple[str, ...]] = ("classes", "image_size")

    classes: tuple[str, ...]
    image_size: int
    backbone: str | None = None
    weights: Mapping[str, Any] = field(default_factory=dict)
    cut: str | None = None
    head_kind: str | None = None
    tta: bool = False  # out = mean(model(x), model(flip(x))), inside the saved model
    finetuned: bool = False
    finetune_val_gain: float | None = None  # fine-tuned minus frozen val accuracy (kept only when > 0)
    unfrozen_layers: tuple[str, ...] = ()
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, list] = field(default_factory=dict)
    epoch_end_ms: tuple[int, ...] = ()  # as HeadInfo's, for the fine-tuning history

    def _checked(self, source: str) -> ModelInfo:
        if len(self.classes) < 2:
            raise BakeoffError(f"{source} lists fewer than two classes; re-run `{self.WRITER}`")
        return dataclasses.replace(
            self,
            classes=_classes(self.classes),
            image_size=int(self.image_size),
            tta=bool(self.tta),
            finetuned=bool(self.finetuned),
            unfrozen_layers=tuple(self.unfrozen_layers),
            epoch_end_ms=_times(self.epoch_end_ms),
        )


@dataclass(frozen=True)
class MetricsInfo(StepInfo):
    """``metrics.json``: the test-split numbers; ``values`` keeps every key (MLflow logs each number)."""

    FILE: ClassVar[str] = METRICS_JSON
    WRITER: ClassVar[str] = "bakeoff evaluate"
    REQUIRED: ClassVar[tuple[str, ...]] = ("accuracy", "classes")

    accuracy: float
    classes: tuple[str, ...]
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> MetricsInfo:
        info = super().from_dict(data, source)
        return dataclasses.replace(info, values=dict(data))

    def _checked(self, source: str) -> MetricsInfo:
        matrix = tuple(tuple(int(v) for v in row) for row in self.confusion_matrix)
        return dataclasses.replace(
            self, accuracy=float(self.accuracy), classes=_classes(self.classes), confusion_matrix=matrix
        )


# ------------------------------------------------------------------------------------------ the gate's decision
_COMPARISON = {"comparison": True}  # set only when a paired comparison with a champion ran


@dataclass(frozen=True, kw_only=True)
class GateDecision:
    """What the promotion gate decided and why: fields declared once, every rendering derived from them.

    ``to_dict`` is the JSON (``bakeoff run``'s result.json "decision", ``gate_decision.json``, the KFP output),
    ``tags`` the ``bakeoff.gate.*`` run tags, ``to_markdown`` ``gate_report.md``. Fields marked as comparison
    fields exist only when the champion was re-scored: the JSON and the tags leave them out while they are None.
    """

    promoted: bool = False
    reason: str = ""
    model_name: str
    challenger_run_id: str
    challenger_backbone: str = ""
    challenger_version: str
    champion_version_before: str | None = None
    champion_version_after: str | None = None
    test: str
    alpha: float
    min_delta: float = 0.0
    n: int | None = field(default=None, metadata=_COMPARISON)
    accuracy_challenger: float | None = field(default=None, metadata=_COMPARISON)
    accuracy_champion: float | None = field(default=None, metadata=_COMPARISON)
    delta: float | None = None
    challenger_only: int | None = field(default=None, metadata=_COMPARISON)
    champion_only: int | None = field(default=None, metadata=_COMPARISON)
    p_value: float | None = None
    n_excluded_seen_by_champion: int | None = field(default=None, metadata=_COMPARISON)
    dataset_hash: str = ""

    _HEADLINE: ClassVar[tuple[str, ...]] = ("promoted", "reason", "model_name")

    def _shown(self) -> list[tuple[str, Any]]:
        """(name, value) of the fields that exist for this decision (comparison fields only once compared)."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("comparison"):
                continue
            out.append((f.name, value))
        return out

    def __getitem__(self, key: str) -> Any:
        """Read a field by its JSON key (``decision["promoted"]``), for callers that treat it as the record."""
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (plain str/int/float/bool/None values)."""
        return dict(self._shown())

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def tags(self) -> dict[str, str]:
        """``bakeoff.gate.<field>`` -> text (None -> ""); the caller redacts and logs them."""
        return {f"{GATE_TAG_PREFIX}{name}": "" if value is None else str(value) for name, value in self._shown()}

    def to_markdown(self) -> str:
        """``gate_report.md``: the verdict, every field in a table, and how to read the paired test."""
        lines = [
            f"# Promotion gate: {self.model_name}",
            "",
            f"**{'PROMOTED' if self.promoted else 'NOT promoted'}**: {self.reason}",
            "",
            "| field | value |",
            "|---|---|",
        ]
        for f in dataclasses.fields(self):
            if f.name in self._HEADLINE:
                continue
            value = getattr(self, f.name)
            if isinstance(value, float):
                value = f"{value:.6g}"
            lines.append(f"| {f.name} | {'' if value is None else value} |")
        lines += [
            "",
            "The champion was re-evaluated on the same test split as the challenger; the test is paired "
            "and one-sided (H1: the challenger is more accurate). `challenger_only` / `champion_only` count the "
            "images only that model classifies correctly. Test images the champion trained or validated on "
            "(`n_excluded_seen_by_champion`) are left out of the comparison.",
        ]
        return "\n".join(lines) + "\n"
