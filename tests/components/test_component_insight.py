"""components.insight: after the gate, the challenger's learning curve and suspected label errors, on the parent
MLflow run (with the card that counts them) and as HTML artifacts for the KFP UI.

Real data end to end: Fashion-MNIST trousers and bags as raw PNG files, ingested by the real ingest step (so the
dataset card is the real one), real MobileNetV2 features (imported ImageNet weights), a real MLflow store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import HTML, Dataset

from bakeoff import contract, manifest, tracking
from bakeoff.demo_data import FASHION_MNIST_DIR, IMAGES_FILE, load_fashion_mnist
from components.insight import insight

from support import IMAGE_SIZE


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, weights_mirror) -> tuple[str, str]:
    """(dataset folder, features folder) of 15 trousers + 15 bags (ingest: 0.2 val, 0.2 test)."""
    from PIL import Image

    from bakeoff.features import extract_features
    from bakeoff.ingest import ingest

    if not (FASHION_MNIST_DIR / IMAGES_FILE).exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make apt-runtime)")
    x, y = load_fashion_mnist()
    root = tmp_path_factory.mktemp("insight-component")
    for digit, name in ((1, "trouser"), (8, "bag")):
        (root / "raw" / name).mkdir(parents=True)
        for i, j in enumerate(np.flatnonzero(y == digit)[:15]):
            Image.fromarray(x[j]).save(root / "raw" / name / f"{name}-{i}.png")
    ingest(str(root / "raw"), str(root / "dataset"), val=0.2, test=0.2, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
        extract_features(
            str(root / "dataset"),
            str(root / "features"),
            "mobilenet_v2",
            "imagenet",
            image_size=IMAGE_SIZE,
            cache_uri=str(root / "cache"),
        )
    return str(root / "dataset"), str(root / "features")


def test_insight_reports_on_the_challengers_features(ingested, tracking_store, artifact, tmp_path):
    dataset, features = ingested
    other = tmp_path / "vgg16-features"  # another branch's features: must not be the ones read
    other.mkdir()
    (other / contract.FEATURES_JSON).write_text(json.dumps({"backbone": "vgg16", "image_size": 32}))
    parent_id = tracking.start_pipeline_run("components-insight", dataset)
    c = tracking.client()
    challenger = c.create_run(c.get_run(parent_id).info.experiment_id, run_name="mobilenet_v2").info.run_id
    c.log_param(challenger, "cut", contract.FeaturesInfo.read(features).cut or "")
    decision = json.dumps({"challenger_run_id": challenger, "challenger_backbone": "mobilenet_v2"})
    curve, issues, report = artifact(HTML, "curve"), artifact(HTML, "issues"), artifact(Dataset, "report")

    record = json.loads(
        insight(
            Dataset(uri=dataset),
            [Dataset(uri=str(other)), Dataset(uri=features)],
            parent_id,
            decision,
            0,
            curve,
            issues,
            report,
        )
    )

    assert record["backbone"] == "mobilenet_v2" and record["skipped"] == {}
    rows = manifest.read_manifest(dataset)
    assert record["label_issues_checked"] == (rows["split"] != "test").sum() < len(rows) == 30  # test left out
    assert "images per class" in record["verdict"]
    assert Path(curve.path).read_text() == (Path(report.path) / contract.LEARNING_CURVE_HTML).read_text()
    assert "Suspected label errors" in Path(issues.path).read_text()
    assert curve.metadata["verdict"] == record["verdict"]
    assert issues.metadata["suspected"] == record["label_issues"]

    # MLflow: the files under insight/, the numbers as metrics, the card counting the suspected errors
    logged = {f.path for f in c.list_artifacts(parent_id, contract.INSIGHT_ARTIFACTS)}
    assert logged == {f"{contract.INSIGHT_ARTIFACTS}/{name}" for name in contract.INSIGHT_FILES}
    metrics = c.get_run(parent_id).data.metrics
    assert metrics["insight_label_issues"] == record["label_issues"]
    assert metrics["insight_learning_curve_val_full"] == pytest.approx(record["learning_curve_val_full"])
    card_dir = Path(tmp_path / "card")
    c.download_artifacts(parent_id, contract.DATASET_ARTIFACTS, str(card_dir))
    card_md = (card_dir / contract.DATASET_ARTIFACTS / contract.CARD_MD_NAME).read_text()
    assert f"suspected label errors (confident learning, review only; nothing removed): {record['label_issues']}" in (
        card_md
    )
    assert (
        json.loads((card_dir / contract.DATASET_ARTIFACTS / contract.CARD_JSON_NAME).read_text())["label_issues"]
        == record["label_issues"]
    )
