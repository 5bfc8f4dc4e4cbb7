"""The promotion gate in both directions, `none` weights, and concurrent pipelines, on the real server."""

from __future__ import annotations

import threading
import time

import pytest

from bakeoff import registry, tracking
from bakeoff.errors import BakeoffError

from support import expected_accuracy


def _log(dataset, candidates, model_name, threshold, experiment="gate", pretrained=True):
    parent = tracking.start_pipeline_run(experiment, str(dataset), run_name=f"t{threshold}")
    child = tracking.log_candidate(parent, model_name=model_name, **candidates(threshold, pretrained).dirs)
    return parent, child


def _gate(dataset, parent, child, model_name, **gate):
    return registry.select_and_register(
        parent, [child], model_name=model_name, dataset_dir=str(dataset), gate=registry.GateConfig(**gate)
    )


def _champion_version(model_name):
    return tracking.client().get_model_version_by_alias(model_name, "champion").version


def test_gate_promotes_only_clear_wins(tracking_env, dataset, candidates, model_name):
    c = tracking.client()
    # 1. no champion yet: the first challenger becomes champion
    p1, r1 = _log(dataset, candidates, model_name, 201.03)
    d1 = _gate(dataset, p1, r1, model_name)
    assert d1["promoted"] and d1["reason"] == "no champion yet"
    v1 = d1["challenger_version"]
    assert _champion_version(model_name) == v1

    # 2. a worse challenger is not promoted; it gets the alias `challenger`
    p2, r2 = _log(dataset, candidates, model_name, 241.59)
    d2 = _gate(dataset, p2, r2, model_name)
    assert not d2["promoted"] and "not better" in d2["reason"]
    assert d2["delta"] == pytest.approx(expected_accuracy(241.59) - expected_accuracy(201.03))
    assert d2["delta"] < 0 and d2["champion_version_before"] == d2["champion_version_after"] == v1
    assert c.get_model_version_by_alias(model_name, "challenger").version == d2["challenger_version"]
    assert _champion_version(model_name) == v1

    # 3. better by 4 images out of 100, all discordant pairs favour it: exact McNemar p = 0.5**4 = 0.0625
    p3, r3 = _log(dataset, candidates, model_name, 190.88)
    d3 = _gate(dataset, p3, r3, model_name)
    assert d3["delta"] > 0 and d3["challenger_only"] == 4 and d3["champion_only"] == 0
    assert d3["p_value"] == pytest.approx(0.0625)
    assert not d3["promoted"] and "not significantly" in d3["reason"]
    assert _champion_version(model_name) == v1
    tags = c.get_run(p3).data.tags
    assert tags["bakeoff.gate.promoted"] == "False" and float(tags["bakeoff.gate.p_value"]) == pytest.approx(0.0625)
    report = c.list_artifacts(p3)
    assert "gate_report.md" in {a.path for a in report}

    # ... the same evidence passes a less conservative test chosen by hand: mid-p = 0.0625 - 0.0625/2
    d3b = registry.promote(p3, gate=registry.GateConfig(test="mcnemar-midp"))
    assert d3b["promoted"] and d3b["p_value"] == pytest.approx(0.03125)
    assert _champion_version(model_name) == d3["challenger_version"]

    # 4. a clearly better challenger is promoted (compared against the CURRENT champion, v3)
    p4, r4 = _log(dataset, candidates, model_name, 127.5)
    d4 = _gate(dataset, p4, r4, model_name, test="bootstrap", n_bootstrap=500)
    assert d4["promoted"] and d4["p_value"] < 0.01 and d4["champion_version_before"] == d3["challenger_version"]
    assert d4["accuracy_challenger"] == pytest.approx(expected_accuracy(127.5))
    assert _champion_version(model_name) == d4["challenger_version"]


def test_none_weights_are_never_promoted(tracking_env, dataset, candidates, model_name):
    c = tracking.client()
    # even with no champion at all, and even as the run's best candidate
    parent = tracking.start_pipeline_run("gate-none", str(dataset))
    random_best = tracking.log_candidate(parent, model_name=model_name, **candidates(127.5, False).dirs)
    pretrained_worse = tracking.log_candidate(parent, model_name=model_name, **candidates(201.03).dirs)
    decision = registry.select_and_register(
        parent,
        [pretrained_worse, random_best],
        model_name=model_name,
        dataset_dir=str(dataset),
        gate=registry.GateConfig(),
    )
    assert decision["challenger_run_id"] == random_best
    assert not decision["promoted"] and "never promoted" in decision["reason"]
    assert decision["champion_version_after"] is None
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="champion"):
        c.get_model_version_by_alias(model_name, "champion")
    assert c.get_model_version_by_alias(model_name, "challenger").tags["weights_pretrained"] == "false"
    # by hand, too
    again = registry.promote(random_best, dataset_dir=str(dataset))
    assert not again["promoted"]


def test_concurrent_promotions_end_with_the_better_champion(tracking_env, dataset, candidates, model_name):
    """Two pipelines finish at once, both clearly better than the champion: the best must end up champion."""
    p0, r0 = _log(dataset, candidates, model_name, 221.31)
    assert _gate(dataset, p0, r0, model_name)["promoted"]
    good = _log(dataset, candidates, model_name, 160.46)
    best = _log(dataset, candidates, model_name, 127.5)
    barrier = threading.Barrier(2)
    results: dict = {}

    def finish(key, parent, child):
        barrier.wait()
        try:
            results[key] = _gate(dataset, parent, child, model_name)
        except Exception as exc:  # surfaced below
            results[key] = exc

    threads = [
        threading.Thread(target=finish, args=("good", *good)),
        threading.Thread(target=finish, args=("best", *best)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(isinstance(r, registry.GateDecision) for r in results.values()), results
    best_version = results["best"]["challenger_version"]
    assert _champion_version(model_name) == best_version
    assert results["best"]["promoted"]
    if results["good"]["promoted"]:  # good went first; best was then compared against good, not the old champion
        assert results["best"]["champion_version_before"] == results["good"]["challenger_version"]
    else:  # best went first; good was compared against best and lost
        assert results["good"]["champion_version_before"] == best_version
    # the lock is gone afterwards
    assert not tracking.client().search_registered_models(f"name = '{model_name}.lock'")


def test_registry_lock_is_exclusive_and_stale_locks_expire(tracking_env, model_name):
    with registry.registry_lock(model_name, timeout_s=5):
        with pytest.raises(BakeoffError, match="still held by a bakeoff process"):
            with registry.registry_lock(model_name, timeout_s=1):
                pass
    # a lock whose lease lapsed (its holder died without releasing it) is broken by the next caller at once;
    # a real SIGKILLed holder: tests/tracking/test_tracking_lock.py
    tracking.client().create_registered_model(
        f"{model_name}.lock", tags={"bakeoff.lock_owner": "dead", "bakeoff.lock_expires": str(time.time() - 1)}
    )
    with registry.registry_lock(model_name, timeout_s=10, notify=lambda _m: None) as lease:
        assert lease.token != "dead"
    assert not tracking.client().search_registered_models(f"name = '{model_name}.lock'")


def test_gate_config_rejects_bad_values():
    with pytest.raises(BakeoffError, match="unknown gate test"):
        registry.GateConfig(test="t-test")
    with pytest.raises(BakeoffError, match="alpha"):
        registry.GateConfig(alpha=1.5)


def test_gate_leaves_out_test_images_the_champion_trained_on(tracking_env, dataset, candidates, model_name, tmp_path):
    """Data changed between runs: images the champion trained on now sit in the test split.

    Scoring the champion on them would flatter it, so the paired test uses only the test images it never saw.
    """
    import shutil

    from bakeoff import manifest

    from support import build_candidate

    older = tmp_path / "older-dataset"
    shutil.copytree(dataset, older)
    df = manifest.read_manifest(older, resolve=False)
    test_rows = df.index[df["split"] == "test"]
    seen = test_rows[::2]  # every other test image was training data for the champion
    df.loc[seen, "split"] = "train"
    manifest.write_manifest(df, older)

    champion = build_candidate(tmp_path / "champion", older, 201.03)
    p1 = tracking.start_pipeline_run("gate-leak", str(older))
    r1 = tracking.log_candidate(p1, model_name=model_name, **champion.dirs)
    assert registry.select_and_register(p1, [r1], model_name=model_name, dataset_dir=str(older))["promoted"]

    p2, r2 = _log(dataset, candidates, model_name, 127.5, experiment="gate-leak")
    decision = _gate(dataset, p2, r2, model_name)
    assert decision["n_excluded_seen_by_champion"] == len(seen)
    assert decision["n"] == len(test_rows) - len(seen)
    report = tracking.client().list_artifacts(p2)
    assert "gate_report.md" in {a.path for a in report}
