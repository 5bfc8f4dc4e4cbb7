"""Print the project's runtime dependencies from pyproject.toml, minus TensorFlow.

Why: the image installs TensorFlow separately (ARG TF_PACKAGE): tensorflow-cpu on the CPU base, and on
the CUDA base the `tensorflow` the base image already ships. pyproject.toml pins tensorflow-cpu, which
would shadow the GPU build if pip installed it there. Dependencies go in their own layer so a source
change rebuilds only the last, small layer.
"""

import re
import sys
import tomllib

TENSORFLOW = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"}

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as fh:
    deps = tomllib.load(fh)["project"]["dependencies"]
for dep in deps:
    name = re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower().replace("_", "-")
    if name not in TENSORFLOW:
        print(dep)
