#!/usr/bin/env bash
# Build the four watchlog images (targets of docker/Dockerfile), tagged by version and
# commit; push them when REGISTRY is set. The seed's build_docker_images.sh, made real.
#
#   scripts/build-images.sh                        # local: watchlog-<role>:{VERSION,SHA}
#   REGISTRY=ghcr.io/OWNER scripts/build-images.sh # also push REGISTRY/watchlog-<role>:...
#   DRY_RUN=1 scripts/build-images.sh              # print the docker commands only
#
# Variables: REGISTRY (push target; unset = build only), IMAGE_NAME (watchlog),
# PLATFORMS (with REGISTRY: linux/amd64,linux/arm64 via buildx; without: the host's),
# LATEST=1 (also tag :latest), DRY_RUN=1. Multi-arch tags go straight to the registry:
# a local image store holds one architecture, so without REGISTRY one platform is built.
set -euo pipefail

cd "$(dirname "$0")/.."

ROLES=(producer-app producer-client consumer-app consumer-client)
IMAGE_NAME=${IMAGE_NAME:-watchlog}
REGISTRY=${REGISTRY:-}
DRY_RUN=${DRY_RUN:-}

# The version is the package's (pyproject.toml); the commit pins exactly what was built.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
[[ -n $VERSION ]] || { echo "no version in pyproject.toml" >&2; exit 1; }
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SHORT=${REVISION:0:12}
# A build of uncommitted changes must not pass for the commit it started from.
if [[ $REVISION != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    SHORT="$SHORT-dirty"
fi
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

run() {
    if [[ -n $DRY_RUN ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

prefix=${REGISTRY:+$REGISTRY/}$IMAGE_NAME
for role in "${ROLES[@]}"; do
    image="$prefix-$role"
    tags=(--tag "$image:$VERSION" --tag "$image:sha-$SHORT")
    [[ -n ${LATEST:-} ]] && tags+=(--tag "$image:latest")
    args=(--file docker/Dockerfile --target "$role" "${tags[@]}"
          --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
          --build-arg "CREATED=$CREATED")
    if [[ -n $REGISTRY ]]; then
        run docker buildx build --platform "${PLATFORMS:-linux/amd64,linux/arm64}" \
            "${args[@]}" --push .
    else
        run docker buildx build ${PLATFORMS:+--platform "$PLATFORMS"} "${args[@]}" --load .
    fi
done
echo "images: $prefix-<role>:$VERSION and :sha-$SHORT for ${ROLES[*]}" >&2
