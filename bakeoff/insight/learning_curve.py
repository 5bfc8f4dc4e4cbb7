"""Learning curve from cached features: accuracy against images per class, to answer "will labelling more
images help?" before anyone spends a week labelling.

The head is the cheap one (standardised features -> logistic regression, balanced class weights), refitted on
stratified subsamples of the train split (each class cut to the same fraction) and scored on the whole val and
test splits. Smaller fractions are repeated on fresh subsamples (mean and spread); the full train split is one
fit, since every repeat would see the same images. The verdict reads VAL only (the test split is reported, never
used for a decision): if val accuracy still rises over the last doubling by more than the subsamples' spread,
more images of the same kind are likely to help; if it is flat, label quality, other features or harder examples
are the better bet.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bakeoff.contract import LEARNING_CURVE_CSV, LEARNING_CURVE_HTML, LEARNING_CURVE_MD, LEARNING_CURVE_PNG
from bakeoff.errors import BakeoffError

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
REPEATS = 5
MIN_GAIN = 0.01  # below one accuracy point per doubling the curve counts as flat, whatever the spread


def single_threaded():
    """BLAS limited to one thread while the small heads fit. Why: on a 1,000 x 1,280 problem, thread start-up and
    sync dominate; on a loaded machine an oversubscribed BLAS made one fit 80x slower (6.8 s against 0.08 s).
    scikit-learn's solvers are imported first: threadpoolctl limits only the BLAS libraries already loaded."""
    import sklearn.linear_model  # noqa: F401 - loads scipy's BLAS so the limit below reaches it
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def logistic_head(seed: int = 0, C: float = 1.0):
    """The probe every insight report uses: scaler + multinomial logistic regression (seconds on 1,000 images)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=1000, random_state=seed)
    )


def _subsample(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified subsample: each class cut to ``fraction`` of its images (at least one)."""
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(1, int(round(fraction * len(members))))
        picked.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(picked))


def curve_runs(
    arrays: dict[str, np.ndarray],
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    repeats: int = REPEATS,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (fraction, repeat): images per class trained on, val and test accuracy (NaN if a split is
    empty)."""
    if not fractions or any(not 0 < f <= 1 for f in fractions) or repeats < 1:
        raise BakeoffError("learning curve needs fractions in (0, 1] and repeats >= 1")
    split, label, x = arrays["split"], arrays["label"].astype(str), arrays["features"]
    train = np.flatnonzero(split == "train")
    if len(np.unique(label[train])) < 2:
        raise BakeoffError("learning curve needs train images of at least two classes")
    scored = {name: np.flatnonzero(split == name) for name in ("val", "test")}
    rng = np.random.default_rng(seed)
    rows = []
    with single_threaded():
        for fraction in sorted(set(fractions)):
            rows += _fits(x, label, train, scored, fraction, 1 if fraction == 1.0 else repeats, rng, seed)
    return pd.DataFrame(rows)


def _fits(x, label, train, scored, fraction: float, repeats: int, rng, seed: int) -> list[dict]:
    """The rows of one fraction: ``repeats`` fresh subsamples, each fitted and scored."""
    rows = []
    n_classes = len(np.unique(label))
    for repeat in range(repeats):
        chosen = train[_subsample(label[train], fraction, rng)]
        if len(np.unique(label[chosen])) < 2:
            continue  # a subsample of one class cannot train a classifier
        head = logistic_head(seed).fit(x[chosen], label[chosen])
        row = {"fraction": fraction, "repeat": repeat, "images_per_class": len(chosen) / n_classes}
        for name, idx in scored.items():
            row[f"{name}_accuracy"] = float((head.predict(x[idx]) == label[idx]).mean()) if len(idx) else math.nan
        rows.append(row)
    return rows


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (standard deviation over repeats; 0 for a single fit) per fraction."""
    grouped = runs.groupby("fraction", sort=True)
    out = grouped.agg(
        images_per_class=("images_per_class", "mean"),
        val_mean=("val_accuracy", "mean"),
        val_std=("val_accuracy", lambda s: float(s.std(ddof=0))),
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", lambda s: float(s.std(ddof=0))),
        repeats=("repeat", "count"),
    )
    return out.reset_index()


@dataclass(frozen=True)
class Verdict:
    """The answer on val: accuracy gained over the last segment, per doubling of images, against the noise."""

    more_data_helps: bool
    gain: float  # val accuracy, last point minus the one before
    gain_per_doubling: float
    spread: float  # std over repeats at the point before the last
    text: str


def verdict(summary: pd.DataFrame) -> Verdict:
    """Read the last segment of the val curve (see the module docstring)."""
    if len(summary) < 2 or summary["val_mean"].isna().all():
        return Verdict(False, math.nan, math.nan, math.nan, "Not enough points (or no val split) for a verdict.")
    before, last = summary.iloc[-2], summary.iloc[-1]
    gain = float(last["val_mean"] - before["val_mean"])
    doublings = math.log2(last["images_per_class"] / before["images_per_class"]) or 1.0
    per_doubling = gain / doublings
    spread = float(before["val_std"])
    helps = per_doubling > max(MIN_GAIN, 2 * spread)
    head = (
        f"From {before['images_per_class']:.0f} to {last['images_per_class']:.0f} images per class, val accuracy "
        f"went {before['val_mean']:.3f} -> {last['val_mean']:.3f} ({100 * per_doubling:+.1f} points per doubling; "
        f"spread over subsamples ±{100 * spread:.1f} points)."
    )
    if helps:
        advice = "Still rising beyond the noise: labelling more images of the same kind is likely to help."
    else:
        advice = (
            "Flat within the noise: more images of the same kind are unlikely to help much; look at the suspected "
            "label errors, harder or more varied examples, or other features instead."
        )
    return Verdict(helps, gain, per_doubling, spread, f"{head} {advice}")


def to_markdown(summary: pd.DataFrame, answer: Verdict, backbone: str) -> str:
    """The table and the verdict, for MLflow and the KFP UI."""
    lines = [
        f"# Learning curve: {backbone}",
        "",
        "Logistic head on the cached features, refitted on stratified subsamples of the train split.",
        "",
        "| fraction | images/class | val acc | val ± | test acc | test ± | fits |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.itertuples(index=False):
        lines.append(
            f"| {r.fraction:.2f} | {r.images_per_class:.1f} | {r.val_mean:.3f} | {r.val_std:.3f} | "
            f"{r.test_mean:.3f} | {r.test_std:.3f} | {r.repeats} |"
        )
    lines += ["", f"**Will labelling more images help?** {answer.text}", ""]
    return "\n".join(lines)


def plot_png(summary: pd.DataFrame, backbone: str) -> bytes:
    """Val and test accuracy (mean ± spread) against images per class."""
    from bakeoff.plots import learning_curve_png

    series = {name: (summary[f"{name}_mean"], summary[f"{name}_std"]) for name in ("val", "test")}
    return learning_curve_png(summary["images_per_class"], series, f"Learning curve ({backbone}, logistic head)")


def to_html(markdown_table: str, png: bytes, backbone: str) -> str:
    """One self-contained page for the KFP UI: the plot inline, then the table and verdict as preformatted text."""
    import base64

    from bakeoff.insight.gallery import esc, page

    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return page(
        f"Learning curve: {backbone}", [f'<img src="{src}" alt="learning curve">', f"<pre>{esc(markdown_table)}</pre>"]
    )


def write_learning_curve(
    arrays: dict[str, np.ndarray],
    out_dir: str,
    backbone: str,
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    repeats: int = REPEATS,
    seed: int = 0,
) -> dict:
    """Compute the curve and write CSV, Markdown, PNG and HTML to ``out_dir``; returns the numbers for MLflow."""
    from bakeoff import storage

    summary = summarise(curve_runs(arrays, fractions=fractions, repeats=repeats, seed=seed))
    answer = verdict(summary)
    md = to_markdown(summary, answer, backbone)
    png = plot_png(summary, backbone)
    buffer = io.StringIO()
    summary.to_csv(buffer, index=False)
    storage.write_bytes(storage.join(out_dir, LEARNING_CURVE_CSV), buffer.getvalue().encode())
    storage.write_bytes(storage.join(out_dir, LEARNING_CURVE_MD), md.encode())
    storage.write_bytes(storage.join(out_dir, LEARNING_CURVE_PNG), png)
    storage.write_bytes(storage.join(out_dir, LEARNING_CURVE_HTML), to_html(md, png, backbone).encode())
    return {
        "learning_curve_more_data_helps": float(answer.more_data_helps),
        "learning_curve_gain_per_doubling": answer.gain_per_doubling,
        "learning_curve_spread": answer.spread,
        "learning_curve_val_full": float(summary["val_mean"].iloc[-1]),
        "verdict": answer.text,
    }
