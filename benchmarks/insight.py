"""How long the insight reports take on demo-sized data: `python -m benchmarks.insight [--per-class 100]`.

The user's path end to end: `bakeoff demo-data` (real Fashion-MNIST as a messy raw dump), ingest, MobileNetV2
features (imported ImageNet weights; set BAKEOFF_WEIGHTS_URI to the mirror), then the insight step's core on
those features. Prints the seconds of each report and their answers (the numbers in docs/models.md "Insight").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from bakeoff.demo_data import make_demo_data
    from bakeoff.features import extract_features
    from bakeoff.ingest import ingest
    from bakeoff.insight.run import run_insight

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bakeoff-insight-bench-") as tmp:
        root = Path(tmp)
        demo = make_demo_data(str(root / "raw"), per_class=args.per_class)
        data = ingest(demo.raw_dir, str(root / "dataset"), label_map=demo.label_map, progress=False)
        extract_features(
            str(root / "dataset"),
            str(root / "features"),
            "mobilenet_v2",
            "imagenet",
            image_size=args.image_size,
            cache_uri=str(root / "cache"),
        )
        started = time.perf_counter()
        record = run_insight(str(root / "dataset"), str(root / "features"), str(root / "insight"))
        record["total_seconds"] = round(time.perf_counter() - started, 2)
        record["n_images"] = data.card["n_images"]
        record["splits"] = data.card["splits"]
    print(json.dumps(record, indent=2, default=str))
    return record


if __name__ == "__main__":
    main()
