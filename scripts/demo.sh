#!/usr/bin/env bash
# make demo: simulated kubelets, one real agent process per node, two aggregator replicas, and
# the official kubectl printing live `kubectl top pod -A` against replica 0.
#   DEMO_SECONDS=N   run N seconds, then exit (0 only if kubectl showed every simulated pod)
#   DEMO_NODES, DEMO_PODS_PER_NODE, DEMO_PORT_BASE   shape and ports (default 3, 10, 18440)
#   DEMO_PROFILE=debug   use target/debug binaries (what `make test` checks the demo with)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/${DEMO_PROFILE:-release}
DEMO=$ROOT/target/demo
NODES=${DEMO_NODES:-3}
PODS=${DEMO_PODS_PER_NODE:-10}
BASE=${DEMO_PORT_BASE:-18440}
SECONDS_TO_RUN=${DEMO_SECONDS:-0}

for b in kubepulse-sim kubepulse-agent kubepulse-aggregator; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b missing: run 'make demo' (it builds first)" >&2; exit 1; }
done
tests/tools/build.sh kubectl
KUBECTL=$( (tests/tools/build.sh paths 2>/dev/null || true) | sed -n 's/^kubectl=//p')
[ -x "$KUBECTL" ] || { echo "demo: kubectl was not installed by tests/tools/build.sh kubectl" >&2; exit 1; }
mkdir -p "$ROOT/.tools/bin"
ln -sf "$KUBECTL" "$ROOT/.tools/bin/kubectl"
KUBECTL=$ROOT/.tools/bin/kubectl

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $BASE $((BASE + 1)) $((BASE + 10)) $((BASE + 11)) $((BASE + 20)); do
  port_free "$p" || { echo "demo: port $p on 127.0.0.1 is taken; set DEMO_PORT_BASE" >&2; exit 1; }
done

rm -rf "$DEMO"
mkdir -p "$DEMO/logs"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "demo: starting $NODES simulated kubelets x $PODS pods (logs in target/demo/logs)"
printf 'demo-kubelet-token' >"$DEMO/token"
"$BIN/kubepulse-sim" --nodes "$NODES" --pods-per-node "$PODS" --refresh 2s \
  --token demo-kubelet-token --control-port $((BASE + 20)) --state-dir "$DEMO/sim" \
  >"$DEMO/logs/sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -f "$DEMO/sim/fleet.json" ] && break; sleep 0.1; done
[ -f "$DEMO/sim/fleet.json" ] || { echo "demo: the simulated fleet did not start:" >&2; tail "$DEMO/logs/sim.log" >&2; exit 1; }

# builds without a Kubernetes mode have no --standalone flag and need none
STANDALONE=""
if "$BIN/kubepulse-aggregator" --help 2>/dev/null | grep -q -- '--standalone'; then
  STANDALONE=--standalone
fi
ENDPOINTS=""
for r in 0 1; do
  # --standalone: the demo has no Kubernetes API (no watches, no authentication)
  "$BIN/kubepulse-aggregator" $STANDALONE --bind-address 127.0.0.1 --secure-port $((BASE + r)) \
    --grpc-bind-address 127.0.0.1 --grpc-port $((BASE + 10 + r)) --grpc-plaintext \
    --cert-dir "$DEMO/aggregator-$r" >"$DEMO/logs/aggregator-$r.log" 2>&1 &
  PIDS+=($!)
  ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:$((BASE + 10 + r))"
done
echo "demo: aggregator replicas on https://127.0.0.1:$BASE and https://127.0.0.1:$((BASE + 1))"

python3 - "$DEMO/sim/fleet.json" >"$DEMO/nodes.txt" <<'PY'
import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    print(n["name"], n["address"])
PY
while read -r name address; do
  "$BIN/kubepulse-agent" --node-name "$name" --kubelet-address "$address" \
    --kubelet-certificate-authority "$DEMO/sim/ca.crt" --kubelet-token-file "$DEMO/token" \
    --aggregator-endpoints "$ENDPOINTS" --aggregator-plaintext \
    --health-address 127.0.0.1:0 >"$DEMO/logs/agent-$name.log" 2>&1 &
  PIDS+=($!)
done <"$DEMO/nodes.txt"
echo "demo: one agent per node, each verifying its kubelet's certificate against the node name"

for r in 0 1; do
  for _ in $(seq 100); do [ -f "$DEMO/aggregator-$r/kubepulse.crt" ] && break; sleep 0.1; done
  [ -f "$DEMO/aggregator-$r/kubepulse.crt" ] || {
    echo "demo: aggregator replica $r did not start:" >&2
    tail -n 20 "$DEMO/logs/aggregator-$r.log" >&2
    exit 1
  }
done
cat >"$DEMO/kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: kubepulse-demo
  cluster:
    server: https://127.0.0.1:$BASE
    certificate-authority: $DEMO/aggregator-0/kubepulse.crt
users:
- name: demo
  user:
    token: demo
contexts:
- name: kubepulse-demo
  context: {cluster: kubepulse-demo, user: demo}
current-context: kubepulse-demo
EOK
export KUBECONFIG=$DEMO/kubeconfig
echo "demo: KUBECONFIG=target/demo/kubeconfig kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods"
echo

EXPECTED=$((NODES * PODS))
best=0
start=$(date +%s)
while :; do
  if out=$("$KUBECTL" top pod -A 2>&1); then
    rows=$(($(wc -l <<<"$out") - 1))
    ((rows > best)) && best=$rows
  else
    rows=0
  fi
  [ -t 1 ] && printf '\033[2J\033[H'
  echo "kubectl top pod -A   ($(date +%T), replica 0, $rows of $EXPECTED pods; Ctrl-C to stop)"
  echo "$out"
  echo
  now=$(date +%s)
  if ((SECONDS_TO_RUN > 0 && now - start >= SECONDS_TO_RUN)); then
    break
  fi
  sleep 2
done
if ((best < EXPECTED)); then
  echo "demo: kubectl never showed all $EXPECTED pods (best: $best); see target/demo/logs" >&2
  exit 1
fi
echo "demo: kubectl showed all $EXPECTED simulated pods"
