# kubepulse: two commands do all the set-up on a fresh machine.
#   make demo   the whole pipeline locally, with live `kubectl top`
#   make test   every check CI runs
SHELL := /bin/bash
CARGO ?= cargo
PURE_CRATES := kubepulse-model kubepulse-agent-core kubepulse-aggregator-core kubepulse-relay-core
IO_CRATES := tokio hyper tonic axum kube kube-client rustls

.PHONY: all build release demo demo-cluster test fmt-check clippy unit images doc purity tools kubectl bench bench-scale clean

all: build

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --release --locked -p kubepulse-agent -p kubepulse-aggregator -p kubepulse-tests --bins

## tools: build the real control plane (etcd, kube-apiserver, kube-controller-manager,
## metrics-server) and fetch kubectl into ~/.cache/kubepulse/tools (cold: several minutes).
tools:
	tests/tools/build.sh all

kubectl:
	tests/tools/build.sh kubectl

demo: release kubectl
	scripts/demo.sh

## demo-cluster: the demo behind a real kube-apiserver (the first run builds the control plane).
demo-cluster:
	scripts/demo-cluster.sh

test: fmt-check clippy purity unit images doc

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## The pure crates must not depend on any I/O crate (normal dependencies).
purity:
	@for crate in $(PURE_CRATES); do \
	  for io in $(IO_CRATES); do \
	    if $(CARGO) tree --locked -e normal -p $$crate -i $$io >/dev/null 2>&1; then \
	      echo "purity: $$crate depends on $$io"; $(CARGO) tree -e normal -p $$crate -i $$io; exit 1; \
	    fi; \
	  done; \
	done; echo "purity: $(PURE_CRATES) have no I/O dependencies"

unit:
	$(CARGO) test --workspace --locked

## The Dockerfiles' own cargo build (static musl release binaries), checked static and run with an
## empty environment (tests/tests/images.rs; needs musl-tools and the musl target, see .ci/run).
images:
	$(CARGO) test --locked -p kubepulse-tests --test images -- --ignored --nocapture

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked

bench:
	$(CARGO) bench --locked -p kubepulse-proto -p kubepulse-agent-core -p kubepulse-aggregator-core -p kubepulse-relay-core

## Scale benchmark (BENCHMARKS.md): the release aggregator in its own process, one gRPC stream
## per simulated node. NODES, PODS_PER_NODE, INTERVAL, DURATION; STREAMS_PER_CONNECTION > 1
## multiplexes node streams on fewer connections (what a relay tier would do). COMPARE=1 also
## runs metrics-server v0.9.0 on the same cluster (needs `make tools`). Results go to
## target/bench-scale/results/, the tables and plot to target/bench-scale/{report.md,scale.svg}.
NODES ?= 1000
PODS_PER_NODE ?= 30
INTERVAL ?= 15s
DURATION ?= 60s
STREAMS_PER_CONNECTION ?= 1
## NODES_PER_RELAY > 0 puts the nodes behind simulated relays (the relay's own batching code),
## one `Relay` stream per NODES_PER_RELAY nodes: what the aggregator sees behind a relay tier.
NODES_PER_RELAY ?= 0
bench-scale: release
	@if [ "$(COMPARE)" = 1 ]; then \
	  target/release/kubepulse-bench-scale compare --nodes $(NODES) --pods-per-node $(PODS_PER_NODE) \
	    --interval $(INTERVAL) --duration $(DURATION) --nodes-per-relay $(NODES_PER_RELAY); \
	else \
	  target/release/kubepulse-bench-scale ours --nodes $(NODES) --pods-per-node $(PODS_PER_NODE) \
	    --interval $(INTERVAL) --duration $(DURATION) --streams-per-connection $(STREAMS_PER_CONNECTION) \
	    --nodes-per-relay $(NODES_PER_RELAY); \
	fi
	target/release/kubepulse-bench-scale report

clean:
	$(CARGO) clean
