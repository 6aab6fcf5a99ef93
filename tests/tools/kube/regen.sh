#!/usr/bin/env bash
# Regenerates go.mod/go.sum of this tools module for a given Kubernetes version.
# Only needed when bumping the version; build.sh uses the committed files as they are.
#
#   tests/tools/kube/regen.sh 1.36.3
#
# k8s.io/kubernetes requires every staging module (k8s.io/api, k8s.io/client-go, ...) at v0.0.0
# and replaces it with ./staging/src/k8s.io/<name>. Neither works for a dependency, so the list
# of staging modules is read from the kubernetes module's own go.mod and each one is replaced by
# its published tag v0.<minor>.<patch>.
set -euo pipefail
V=${1:?usage: regen.sh <kubernetes version, e.g. 1.36.3>}
V=${V#v}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
cd "$(dirname "${BASH_SOURCE[0]}")"

GOMOD=$(go mod download -json "k8s.io/kubernetes@v$V" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or sys.exit("go mod download: " + d.get("Error", "no GoMod")))')
GOLINE=$(awk '$1=="go"{print $2; exit}' "$GOMOD")
STAGING=$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$GOMOD" | awk '{print $1}')
[ -n "$STAGING" ] || { echo "regen.sh: no staging replace lines found in $GOMOD" >&2; exit 1; }

rm -f go.mod go.sum
cat > go.mod <<EOF
module kubepulse/tests/tools/kube

go $GOLINE

godebug default=go${GOLINE%.*}
EOF
{
  echo
  echo "replace ("
  for m in $STAGING; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${V#1.}"; done
  echo ")"
} >> go.mod
go mod edit -fmt
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$V" "k8s.io/kubernetes/cmd/kube-controller-manager@v$V"
go mod tidy
echo "regen.sh: go.mod now pins k8s.io/kubernetes v$V with $(echo "$STAGING" | wc -l) staging replaces at v0.${V#1.}"
