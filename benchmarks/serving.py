"""Serving latency of `mlflow models serve` (the champion's MLflow model) for one image and a batch of 32.

The model is the serving tests' real photo classifier (tests/support/photo_model.py: MobileNetV2 with the offline
ImageNet weights, four ImageNet classes as its head), logged as every candidate is (``bakeoff.tracking.models``:
the serving model, upload verified), registered and aliased ``champion`` in a fresh SQLite store; the requests are real photo files as base64 in MLflow's ``dataframe_split``
JSON, N sequential POSTs after two warm-ups. Prints one JSON line per input size (docs/tracking.md has the table).

    python -m benchmarks.serving WORKDIR [--sizes 128,224] [--n 30]     # needs BAKEOFF_WEIGHTS_URI (the mirror)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support: the photo model and files

from support import VENV_BIN, free_port, stop_process_group, wait_http
from support.photo_model import write_photo_files, write_photo_model


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as resp:
        return json.loads(resp.read())


def _body(blobs: list[bytes]) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()] for b in blobs]}}


def _timings_ms(url: str, body: dict, n: int) -> dict:
    """Median and spread (min, quartiles, max) of ``n`` sequential POSTs after two warm-ups, in ms."""
    for _ in range(2):
        _post(url, body)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        _post(url, body)
        times.append((time.perf_counter() - start) * 1000)
    q1, median, q3 = statistics.quantiles(times, n=4)
    return {
        "median": round(median),
        "min": round(min(times)),
        "q1": round(q1),
        "q3": round(q3),
        "max": round(max(times)),
    }


def measure(workdir: Path, size: int, n: int, mirror: str) -> dict:
    from bakeoff import tracking
    from bakeoff.tracking.models import log_model_folder

    photos = workdir / "photos"
    names = sorted(write_photo_files(photos))
    model_dir = write_photo_model(workdir / f"model{size}", mirror, size)
    run_id = tracking.client().create_run(tracking.ensure_experiment("serving-benchmark")).info.run_id
    name = f"serving-benchmark-{size}"
    version, _ = log_model_folder(run_id, str(model_dir), name)
    tracking.client().set_registered_model_alias(name, "champion", version)
    port, log = free_port(), workdir / f"serve{size}.log"
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local"]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", proc, 300, log)
        up = time.perf_counter() - start
        load = os.getloadavg()[0]
        one = _timings_ms(url, _body([(photos / "coffee.jpg").read_bytes()]), n)
        batch = _timings_ms(url, _body([(photos / names[i % len(names)]).read_bytes() for i in range(32)]), n)
    finally:
        stop_process_group(proc)
    return {
        "size": size,
        "server_up_s": round(up, 1),
        "n": n,
        "one_image_ms": one,
        "batch32_ms": batch,
        "batch32_ms_per_image": round(batch["median"] / 32, 1),
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    from bakeoff import env, tracking

    mirror = env.weights_mirror_uri()
    if not mirror:
        raise SystemExit("set BAKEOFF_WEIGHTS_URI to a weights mirror with mobilenet_v2 (`bakeoff weights import`)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{args.workdir.resolve() / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the server process resolves models:/ through the same store
    tracking.configure(uri)
    for size in (int(s) for s in args.sizes.split(",")):
        print(json.dumps(measure(args.workdir, size, args.n, mirror)), flush=True)


if __name__ == "__main__":
    main()
