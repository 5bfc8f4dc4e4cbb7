"""The MLflow UI of the real server, opened in headless Chromium, lists the runs of a pipeline run.

Needs Debian's chromium + chromium-driver (`make apt-test`); skipped with the reason when they are absent.
The screenshot is kept as docs/mlflow-ui.png (refreshed with BAKEOFF_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bakeoff import registry, tracking

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait_for(driver, texts: list[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    Path("/tmp/mlflow-ui-page.html").write_text(driver.page_source)
    driver.save_screenshot("/tmp/mlflow-ui-fail.png")
    raise AssertionError(f"UI never showed {texts}; page text was:\n{body[:2000]}")


@pytest.mark.skipif(
    not (Path(CHROMEDRIVER).exists() and shutil.which("chromium")) and not os.environ.get("CI"),
    reason="needs Debian chromium + chromium-driver: run `make apt-test` (never skipped in CI)",
)
def test_mlflow_ui_lists_the_pipeline_runs(tracking_env, dataset, candidates, model_name, tmp_path):
    experiment = "bakeoff-ui"
    parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="nightly-bakeoff")
    children = [
        tracking.log_candidate(parent, model_name=model_name, **candidates(127.5, backbone="mobilenet_v2").dirs),
        tracking.log_candidate(parent, model_name=model_name, **candidates(160.46, backbone="vgg16").dirs),
        tracking.log_candidate(parent, model_name=model_name, **candidates(127.5, False).dirs),
    ]
    decision = registry.select_and_register(parent, children, model_name=model_name, dataset_dir=str(dataset))
    tracking.finish_pipeline_run(parent, tracking.leaderboard(experiment, parent_run_id=parent), decision)
    exp_id = tracking.client().get_experiment_by_name(experiment).experiment_id

    driver = _browser()
    try:
        driver.get(f"{tracking_env.url}/#/experiments/{exp_id}/runs")
        body = _wait_for(driver, ["nightly-bakeoff"])
        for close in driver.find_elements(
            "css selector", "button[data-component-id='mlflow.assistant.chat_panel.close']"
        ):
            close.click()  # the assistant side panel would cover half of the screenshot
        if "vgg16-imagenet" not in body:  # nested runs start collapsed under their parent: expand it
            for button in driver.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']"):
                button.click()
        body = _wait_for(
            driver,
            ["nightly-bakeoff", "mobilenet_v2-imagenet", "vgg16-imagenet", "mobilenet_v2-none", "4 matching runs"],
        )
        assert experiment in body
        time.sleep(1.0)  # let the table settle before the picture
        # docs/mlflow-ui.png is refreshed on request only, so a test run leaves the work tree clean
        shot = ROOT / "docs" / "mlflow-ui.png" if os.environ.get("BAKEOFF_UPDATE_SCREENSHOT") else tmp_path / "ui.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
