#!/usr/bin/env bash
# Build the bakeoff container image with buildah: `bash infra/image/build.sh IMAGE BASE_IMAGE`.
#
#   IMAGE       the tag to build, e.g. bakeoff:dev or ghcr.io/acme/bakeoff:0.1.0-cpu
#   BASE_IMAGE  python:3.11-slim-bookworm            (CPU, from a registry)
#               tensorflow/tensorflow:2.21.0-gpu     (CUDA; TF_PACKAGE defaults to the base's own TF)
#               localhost/bakeoff-base:bookworm      (CPU, built here from Debian with debootstrap when
#                                                     missing: for hosts that cannot pull any image)
#
# Environment knobs:
#   TF_PACKAGE        pip requirement for TensorFlow (default: tensorflow-cpu==2.21.0, or
#                     tensorflow==<tag> for a tensorflow/tensorflow:<tag>-gpu base). CUDA build on the
#                     plain Python base: TF_PACKAGE='tensorflow[and-cuda]==2.21.0'
#   EXTRA_PACKAGES    passed on as the build arg of that name when set (default in the Dockerfile)
#   DEBIAN_MIRROR     debootstrap mirror (default http://deb.debian.org/debian)
#   BAKEOFF_HOST_PIP  auto (default): mount this host's pip configuration, wheel folders and CA bundle
#                     read-only into RUN steps when they exist, so pip resolves exactly as on the host;
#                     0: mount nothing (a plain laptop with internet access needs nothing)
#   CONTAINERS_CONF   default infra/image/containers.conf (runc runtime, lowered ulimits)
#   BAKEOFF_GIT_COMMIT  the code version baked into the image (ENV of that name, tagged on every MLflow
#                     run); default: `git rev-parse HEAD` of this checkout, "-dirty" when bakeoff/,
#                     components/, pipelines/ or pyproject.toml have uncommitted changes
#
# Idempotent: the base image is built only when missing, and buildah's layer cache makes a rebuild
# with unchanged dependencies redo only the last layer (the project's own code).
set -euo pipefail

usage() { echo "usage: bash infra/image/build.sh IMAGE BASE_IMAGE" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
IMAGE=$1
BASE_IMAGE=$2
shift 2

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOCAL_BASE_PREFIX=localhost/bakeoff-base
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BAKEOFF_HOST_PIP=${BAKEOFF_HOST_PIP:-auto}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

say() { printf '\033[1m[build.sh]\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v buildah >/dev/null || die "buildah not found: apt-get install -y buildah podman runc debootstrap (see docs/infra.md)"

# TensorFlow: the CPU wheel on a plain Python base; the GPU base's own TensorFlow on tensorflow/tensorflow.
if [[ -z ${TF_PACKAGE:-} ]]; then
  if [[ $BASE_IMAGE == tensorflow/tensorflow:* || $BASE_IMAGE == */tensorflow/tensorflow:* ]]; then
    ref=${BASE_IMAGE%%@*}        # a digest-pinned base: tensorflow/tensorflow:2.21.0-gpu@sha256:...
    tag=${ref##*:}
    TF_PACKAGE="tensorflow==${tag%%-*}"
  else
    TF_PACKAGE="tensorflow-cpu==2.21.0"
  fi
fi

build_local_base() {
  # A minimal Debian bookworm (Python 3.11) image from debootstrap: no registry needed.
  command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"
  local rootfs ctr t0
  t0=$SECONDS
  rootfs=$(mktemp -d /var/tmp/bakeoff-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  say "base image $BASE_IMAGE is missing: debootstrap bookworm into $rootfs (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian bookworm minbase + python3 (debootstrap)" "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -f "$rootfs.log"
  say "base image $BASE_IMAGE built in $((SECONDS - t0)) s"
}

if [[ $BASE_IMAGE == "$LOCAL_BASE_PREFIX":* ]]; then
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE present"
  else
    build_local_base
  fi
fi

# Host pip configuration, read-only, for identical resolution on hosts that use a local index or a
# proxy CA. Each path is mounted only where it exists; none of them ends up in the image.
mounts=()
if [[ $BAKEOFF_HOST_PIP != 0 ]]; then
  for path in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip /root/.config/pip \
              /opt/wheels /opt/pypi /opt/pypi-more; do
    [[ -e $path ]] && mounts+=(--volume "$path:$path:ro")
  done
fi

# The code version: the image has no git, so bakeoff.tracking reads it from the environment.
if [[ -z ${BAKEOFF_GIT_COMMIT:-} ]]; then
  BAKEOFF_GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  if [[ $BAKEOFF_GIT_COMMIT != unknown ]] \
     && ! git -C "$ROOT" diff --quiet HEAD -- bakeoff components pipelines pyproject.toml 2>/dev/null; then
    BAKEOFF_GIT_COMMIT="$BAKEOFF_GIT_COMMIT-dirty"
  fi
fi

say "building $IMAGE from $BASE_IMAGE (TF_PACKAGE=$TF_PACKAGE, commit $BAKEOFF_GIT_COMMIT, ${#mounts[@]} host mount args)"
t0=$SECONDS
buildah build --layers --runtime runc --network=host \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TF_PACKAGE="$TF_PACKAGE" \
  --build-arg BAKEOFF_GIT_COMMIT="$BAKEOFF_GIT_COMMIT" \
  ${EXTRA_PACKAGES+--build-arg "EXTRA_PACKAGES=$EXTRA_PACKAGES"} \
  "${mounts[@]}" --file "$ROOT/Dockerfile" --tag "$IMAGE" "$@" "$ROOT"
bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
say "built $IMAGE in $((SECONDS - t0)) s; image size $(awk -v b="$bytes" 'BEGIN {printf "%.2f GB", b / 1e9}')"
say "try it: CONTAINERS_CONF=$CONTAINERS_CONF podman run --rm $IMAGE bakeoff --help"
