#!/usr/bin/env bash
# make demo-cluster: the demo on a real control plane. etcd + kube-apiserver +
# kube-controller-manager v1.36.3 on 127.0.0.1, the simulated fleet as Node and Pod objects, one
# agent per node, two aggregator replicas registered as metrics.k8s.io, and the official kubectl
# running `kubectl top node`, `kubectl top pod -A` and `kubectl get podmetrics -A` through
# kube-apiserver.
#   DEMO_SECONDS=N   run N seconds, then exit (0 only if kubectl showed every simulated pod)
#   DEMO_NODES, DEMO_PODS_PER_NODE   shape of the fleet (default 3, 10)
# The first run builds etcd, kube-apiserver and kube-controller-manager from the Go module proxy
# (tests/tools/build.sh; tens of minutes on 2 cores, cached in ~/.cache/kubepulse/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# build.sh prints what it builds; this adds a heartbeat, since one Go build can run 20+ minutes
# without printing anything. (A background job ignores Ctrl-C, so pass it on.)
tools() {
  local part=$1 pid n=0
  tests/tools/build.sh "$part" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    n=$((n + 1))
    if ((n % 30 == 0)) && kill -0 "$pid" 2>/dev/null; then
      echo "demo-cluster: still building '$part' (${n}s so far; logs in ~/.cache/kubepulse/tools/logs)"
    fi
  done
  trap - INT TERM
  wait "$pid"
}

if ! tests/tools/build.sh paths >/dev/null 2>&1; then
  echo "demo-cluster: the control-plane binaries are not built yet; building them now."
  echo "demo-cluster: the first build compiles kube-apiserver and kube-controller-manager from source:"
  echo "demo-cluster: expect tens of minutes on 2 cores (later runs reuse ~/.cache/kubepulse/tools)."
fi
tools kubectl
tools etcd
tools kube
KUBECTL=$( (tests/tools/build.sh paths 2>/dev/null || true) | sed -n 's/^kubectl=//p')
mkdir -p "$ROOT/.tools/bin"
ln -sf "$KUBECTL" "$ROOT/.tools/bin/kubectl"

echo "demo-cluster: building kubepulse-demo-cluster (release)"
cargo build --release --locked -p kubepulse-tests --bin kubepulse-demo-cluster
DEMO_DIR=$ROOT/target/demo-cluster exec "$ROOT/target/release/kubepulse-demo-cluster"
