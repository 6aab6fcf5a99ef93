#!/usr/bin/env bash
# Smoke test for the binaries from build.sh: starts etcd + kube-apiserver + kube-controller-manager
# on free 127.0.0.1 ports with throw-away certificates, waits for /readyz, runs a few kubectl
# commands (including one that needs the deployment and replicaset controllers), tears down.
#
# Usage: tests/tools/smoke.sh          (KEEP=1 keeps the temp dir with certs and logs)
# Needs: openssl, curl, python3 (free ports), and the binaries (tests/tools/build.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[smoke %3ds] %s\n' "$SECONDS" "$*" >&2; }

# Binary paths from build.sh.
declare -A BIN
paths=$("$HERE/build.sh" paths) || { echo "[smoke] binaries missing; run tests/tools/build.sh first" >&2; exit 1; }
while IFS='=' read -r k v; do BIN[$k]=$v; done <<<"$paths"
K8S_VERSION=$(basename "$(dirname "${BIN[kube-apiserver]}")") # <cache>/k8s-v1.36.3/kube-apiserver
K8S_VERSION=${K8S_VERSION#k8s-}

W=$(mktemp -d "${TMPDIR:-/tmp}/kubepulse-smoke.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? i pid t
  # Stop in reverse start order (KCM, kube-apiserver, etcd), each with TERM, then KILL after 10s.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]} t=$SECONDS
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null && echo "[smoke] pid $pid ignored SIGTERM for 10s; killed" >&2
    wait "$pid" 2>/dev/null || true
    [ "${SMOKE_DEBUG:-0}" = 1 ] && echo "[smoke] pid $pid stopped in $((SECONDS - t))s" >&2
  done
  if [ "$rc" -ne 0 ]; then
    for f in "$W"/*.log; do [ -f "$f" ] && { echo "---- last lines of $f" >&2; tail -n 20 "$f" >&2; }; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "[smoke] kept $W" >&2; else rm -rf "$W"; fi
  if [ "$rc" -eq 0 ]; then echo "[smoke] PASS (${SECONDS}s total)" >&2; else echo "[smoke] FAIL (rc=$rc)" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$W"

# ---- certificates (see the recipe in the control-plane reference) ----
ossl() { openssl "$@" >>"$W/openssl.log" 2>&1; }
ca() { # ca NAME CN
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$1.key" -out "$1.crt" -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() { # leaf NAME CA SUBJECT EXTENSIONS
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "$3"
  printf '%b\n' "$4" >"$1.ext"
  ossl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.crt"
}
ca ca kubepulse-test-ca
leaf apiserver ca /CN=kube-apiserver \
  'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature'
leaf admin ca /O=system:masters/CN=admin \
  'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature'
ca front-proxy-ca kubepulse-test-front-proxy-ca
leaf front-proxy-client front-proxy-ca /CN=front-proxy-client \
  'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature'
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
ossl pkey -in sa.key -pubout -out sa.pub
log "certificates ready in $W"

# ---- free ports (held together so they differ; tiny race until the servers bind) ----
read -r EP PP AP < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

cat >admin.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster: {server: "https://127.0.0.1:$AP", certificate-authority: "$W/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$W/admin.crt", client-key: "$W/admin.key"}
contexts:
- name: smoke
  context: {cluster: smoke, user: admin}
current-context: smoke
EOF
export KUBECONFIG=$W/admin.kubeconfig
kc() { "${BIN[kubectl]}" --request-timeout=10s "$@"; }

# retry SECONDS DESCRIPTION COMMAND...: some objects appear shortly after /readyz turns ok.
retry() {
  local limit=$1 what=$2 t=$SECONDS n=0; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - t)) -lt "$limit" ] || { log "timed out after ${limit}s waiting for: $what"; "$@" || true; exit 1; }
    n=$((n + 1)); sleep 0.5
  done
  [ "$n" -eq 0 ] || log "waited $((SECONDS - t))s ($n retries) for: $what"
}
alive() { kill -0 "$1" 2>/dev/null || { log "$2 exited early"; exit 1; }; }

# ---- etcd ----
T0=$SECONDS
"${BIN[etcd]}" --name=t0 --data-dir="$W/etcd" --unsafe-no-fsync --log-level=warn \
  --listen-client-urls="http://127.0.0.1:$EP" --advertise-client-urls="http://127.0.0.1:$EP" \
  --listen-peer-urls="http://127.0.0.1:$PP" --initial-advertise-peer-urls="http://127.0.0.1:$PP" \
  --initial-cluster="t0=http://127.0.0.1:$PP" >etcd.log 2>&1 &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
until curl -sf "http://127.0.0.1:$EP/health" >/dev/null; do
  alive "$ETCD_PID" etcd; [ $((SECONDS - T0)) -lt 30 ] || { log "etcd not healthy after 30s"; exit 1; }; sleep 0.2
done
log "etcd healthy on 127.0.0.1:$EP after $((SECONDS - T0))s"

# ---- kube-apiserver ----
T1=$SECONDS
"${BIN[kube-apiserver]}" --etcd-servers="http://127.0.0.1:$EP" --endpoint-reconciler-type=none \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$AP" \
  --tls-cert-file=apiserver.crt --tls-private-key-file=apiserver.key --client-ca-file=ca.crt \
  --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
  --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
  --requestheader-client-ca-file=front-proxy-ca.crt --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file=front-proxy-client.crt --proxy-client-key-file=front-proxy-client.key \
  >kube-apiserver.log 2>&1 &
APISERVER_PID=$!
PIDS+=("$APISERVER_PID")
until curl -sf --cacert ca.crt --cert admin.crt --key admin.key "https://127.0.0.1:$AP/readyz" >/dev/null 2>&1; do
  alive "$APISERVER_PID" kube-apiserver
  [ $((SECONDS - T1)) -lt 120 ] || { log "kube-apiserver not ready after 120s"; exit 1; }
  sleep 0.5
done
log "kube-apiserver ready on 127.0.0.1:$AP after $((SECONDS - T1))s (etcd start to ready: $((SECONDS - T0))s)"

# ---- kube-controller-manager ----
"${BIN[kube-controller-manager]}" --kubeconfig=admin.kubeconfig --leader-elect=false \
  --controllers=horizontal-pod-autoscaler-controller,deployment-controller,replicaset-controller \
  --bind-address=127.0.0.1 --secure-port=0 --horizontal-pod-autoscaler-sync-period=2s \
  --horizontal-pod-autoscaler-downscale-stabilization=0s \
  --horizontal-pod-autoscaler-cpu-initialization-period=10s \
  --horizontal-pod-autoscaler-initial-readiness-delay=5s \
  >kube-controller-manager.log 2>&1 &
KCM_PID=$!
PIDS+=("$KCM_PID")

# ---- checks ----
kc version
# (no "| grep -q" under pipefail: grep exiting early can kill kubectl with SIGPIPE)
sv=$(kc get --raw /version)
[[ $sv == *"\"gitVersion\": \"$K8S_VERSION\""* ]] || { log "server /version is not $K8S_VERSION: $sv"; exit 1; }
retry 30 "namespaces default kube-system kube-public kube-node-lease" \
  kc get ns default kube-system kube-public kube-node-lease
kc get ns
has_requestheader() {
  local names
  names=$(kc -n kube-system get configmap extension-apiserver-authentication \
    -o jsonpath='{.data.requestheader-allowed-names}') && [[ $names == *front-proxy-client* ]]
}
retry 30 "configmap kube-system/extension-apiserver-authentication with requestheader data" has_requestheader
retry 30 "APIService v1.apps" kc get apiservice v1.apps

# KCM: a Deployment must get a ReplicaSet and a Pod (deployment + replicaset controllers).
T2=$SECONDS
kc create deployment smoke --image=registry.invalid/none:0 >/dev/null
until [ -n "$(kc get pods -l app=smoke -o name 2>/dev/null)" ]; do
  alive "$KCM_PID" kube-controller-manager
  [ $((SECONDS - T2)) -lt 60 ] || { log "no pod for deployment smoke after 60s (kube-controller-manager not working?)"; exit 1; }
  sleep 0.5
done
log "kube-controller-manager created the ReplicaSet and Pod after $((SECONDS - T2))s"
kc get deploy,rs,pods -l app=smoke
alive "$ETCD_PID" etcd; alive "$APISERVER_PID" kube-apiserver; alive "$KCM_PID" kube-controller-manager
log "control plane up in $((SECONDS - T0))s from etcd start"
