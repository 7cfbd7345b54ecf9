#!/usr/bin/env bash
# Resolve the base images' tags to their current digests and write them to docker/.env, which
# `docker compose -f docker/compose.yaml` reads (PYTHON_DIGEST, CUDA_DIGEST build arguments). Commit
# docker/.env to pin the bases; re-run to move to newer bases. Needs Docker with buildx and the network.
# For a plain `docker build`, pass the same values: --build-arg PYTHON_DIGEST=sha256:... (see docker/README.md).
set -euo pipefail
cd "$(dirname "$0")"
digest() {
    docker buildx imagetools inspect "$1" --format '{{json .Manifest.Digest}}' | tr -d '"'
}
# The tags are the Dockerfiles' defaults (ARG PYTHON_IMAGE / CUDA_IMAGE).
python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile.server)
cuda_image=$(sed -n 's/^ARG CUDA_IMAGE=//p' Dockerfile.server-gpu)
python_digest=$(digest "$python_image")
cuda_digest=$(digest "$cuda_image")
for value in "$python_digest" "$cuda_digest"; do
    [[ $value =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "Not a digest: '$value'" >&2; exit 1; }
done
cat > .env <<ENV
# Written by docker/pin_digests.sh on $(date -u +%Y-%m-%d): $python_image and $cuda_image
PYTHON_DIGEST=$python_digest
CUDA_DIGEST=$cuda_digest
ENV
cat .env
