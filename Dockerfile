# The one bakeoff image: every KFP component runs in it (lightweight components with
# install_kfp_package=False run `python3 -m kfp.dsl.executor_main`), it carries the `bakeoff` CLI, and
# it serves the team's MLflow tracking server (infra/k8s/base/tracking).
#
# Build with `make image` (infra/image/build.sh) or any OCI builder:
#   CPU : --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm     --build-arg TF_PACKAGE=tensorflow-cpu==2.21.0
#   CUDA: --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm     --build-arg TF_PACKAGE='tensorflow[and-cuda]==2.21.0'
#         (CUDA/cuDNN from pip wheels; the node's driver comes in through the NVIDIA container toolkit)
#    or --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu  --build-arg TF_PACKAGE=tensorflow==2.21.0
#         (reuses the base's TensorFlow; only if that image's python3 is 3.11: checked below)
#   here: --build-arg BASE_IMAGE=localhost/bakeoff-base:bookworm  (debootstrap base, built by build.sh)
# The base must provide Python 3.11 as `python3`.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${BASE_IMAGE}

# TensorFlow is chosen per variant: tensorflow-cpu; tensorflow[and-cuda] (CUDA libraries as wheels);
# or, on the tensorflow/tensorflow GPU base, its own `tensorflow` (pip finds it satisfied).
ARG TF_PACKAGE=tensorflow-cpu==2.21.0

LABEL org.opencontainers.image.title="bakeoff" \
      org.opencontainers.image.description="Transfer-learning bake-off: KFP components and the bakeoff CLI" \
      org.opencontainers.image.licenses="Apache-2.0"

# A venv that also sees the base's site-packages, so the CUDA base's TensorFlow is reused, not
# reinstalled. `python3` on PATH is the venv's: KFP's component command calls plain `python3`.
ENV VIRTUAL_ENV=/opt/bakeoff \
    PATH=/opt/bakeoff/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LANG=C.UTF-8

RUN python3 -c "import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else \
        f'base image python3 is {v[0]}.{v[1]}; bakeoff needs 3.11: use python:3.11-slim-bookworm')" \
 && (python3 -m venv --system-site-packages "$VIRTUAL_ENV" 2>/dev/null \
     || python3 -m venv --system-site-packages --without-pip "$VIRTUAL_ENV") \
 && "$VIRTUAL_ENV/bin/python3" -m pip --version

# Dependencies first, in their own layers: code changes do not reinstall TensorFlow.
WORKDIR /src
COPY pyproject.toml infra/image/requirements.py ./
RUN pip install "$TF_PACKAGE" \
 && python3 requirements.py pyproject.toml > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm -f /tmp/requirements.txt

# Extras for the image's second job, the team's MLflow tracking server (infra/k8s/base/tracking):
# the PostgreSQL driver, and Flask-WTF (mlflow[auth]: the basic-auth app's CSRF check). Empty the ARG
# to leave them out.
ARG EXTRA_PACKAGES="psycopg2-binary==2.9.13 Flask-WTF==1.3.0"
RUN if [ -n "$EXTRA_PACKAGES" ]; then pip install $EXTRA_PACKAGES; fi

# The project itself (no deps: they are all above; a missing one fails `pip check` right here).
COPY README.md ./
COPY bakeoff ./bakeoff
COPY components ./components
COPY pipelines ./pipelines
# `pip check` must be clean, except that the CUDA build's `tensorflow` stands in for the CPU wheel
# that pyproject.toml names.
RUN pip install --no-deps . \
 && { pip check > /tmp/pip-check.txt || true; } \
 && ! grep -v -e "^No broken requirements" -e "^bakeoff .* requires tensorflow-cpu, which is not installed" \
      /tmp/pip-check.txt | grep . \
 && rm -f /tmp/pip-check.txt \
 && rm -rf /src/build /src/*.egg-info \
 && python3 -c "import bakeoff, kfp.dsl.executor_main, tensorflow as tf, keras; print('bakeoff', bakeoff.__version__, 'tf', tf.__version__)" \
 && bakeoff --help >/dev/null

# Non-root, numeric uid so Kubernetes' runAsNonRoot can verify it. HOME holds Keras and Matplotlib
# caches. KFP's executor maps an output artifact s3://B/K (gs://, minio://) to the local path /s3/B/K
# (/gcs, /minio), which the launcher then uploads: those roots must be writable by a non-root user.
RUN (useradd --uid 1000 --create-home --home-dir /home/bakeoff --shell /bin/bash bakeoff \
     || adduser --uid 1000 --home /home/bakeoff --disabled-password --gecos "" bakeoff) \
 && mkdir -p /s3 /gcs /minio \
 && chmod 1777 /s3 /gcs /minio
ENV HOME=/home/bakeoff \
    KERAS_HOME=/home/bakeoff/.keras \
    MPLCONFIGDIR=/home/bakeoff/.config/matplotlib
USER 1000:1000
WORKDIR /home/bakeoff

# The code version, last so a new commit rebuilds no earlier layer: build.sh passes `git rev-parse HEAD`
# (with "-dirty" when the packaged code has uncommitted changes). bakeoff.tracking tags every MLflow run
# with it (bakeoff.git_commit): the image has no git to ask.
ARG BAKEOFF_GIT_COMMIT=unknown
ENV BAKEOFF_GIT_COMMIT=${BAKEOFF_GIT_COMMIT}
LABEL org.opencontainers.image.revision=${BAKEOFF_GIT_COMMIT}

CMD ["bakeoff", "--help"]
