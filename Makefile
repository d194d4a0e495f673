# fastpath — the two commands a newcomer needs are `make lab` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
# Tests run one package at a time: they share 2 cores with BPF programs,
# kube-apiservers and real packets, and timing-sensitive checks stay stable.
TEST_FLAGS ?= -count=1 -p 1 -timeout 25m

.PHONY: all build generate check-generate test test-unit lint lab lab-down k8s-tools bench bench-datapath bench-cni bench-crossnode bench-control bench-l7 clean bench-policy
# deps: the pinned Debian packages (hack/install-deps.sh); quick when they are there.
.PHONY: deps

all: build

# Every command into bin/: fastpath-agent, fastpath-bgp (the per-node BGP
# speaker, its own binary so the agent does not link GoBGP), fastpath-cni,
# fastpath-operator, fastpathctl, fastpath-lab.
build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Rebuild the BPF objects from bpf/*.c (needs clang-19). The output is
# committed, so `go build` needs no clang.
generate:
	cd internal/datapath/bpfobj && $(GO) generate ./...

# CI: the committed objects must be what the committed C compiles to.
check-generate: generate
	@git diff --exit-code --stat -- internal/datapath/bpfobj || \
		{ echo "committed BPF objects are stale: run 'make generate' and commit"; exit 1; }

# The real Kubernetes control plane (etcd, kube-apiserver, ...) built from
# the Go module proxy into tools/bin. Cached: a second run only relinks.
k8s-tools:
	tools/build-k8s.sh

deps:
	@if [ "$$(id -u)" -eq 0 ]; then hack/install-deps.sh; \
	else hack/install-deps.sh || echo "deps: not root: privileged tests will skip" >&2; fi

test: deps build k8s-tools
	$(GO) test $(TEST_FLAGS) ./...

# Pure-Go tests only: no root, no kernel, no apiserver.
test-unit:
	$(GO) test -count=1 -short ./...

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# The lab: a real control plane and NODES nodes in fp- namespaces, pods through
# fastpath-cni, demo Services, and a table of checks; it stays up.
# ROUTING=native|vxlan. The first run builds the control plane (k8s-tools).
NODES ?= 2
ROUTING ?= native
lab: deps build k8s-tools
	$(BIN)/fastpath-lab up --nodes $(NODES) --routing-mode $(ROUTING)

# Ends exactly the processes the lab recorded and removes its namespaces and pins.
lab-down:
	@if [ -x $(BIN)/fastpath-lab ]; then $(BIN)/fastpath-lab down; else $(GO) run ./cmd/fastpath-lab down; fi

# The headline comparison (issue 9): fastpath TC and socket LB vs kube-proxy
# iptables and nftables vs the direct path, all fed by one kube-apiserver and
# the same Services, N = 100 .. 20,000: data path, control path and cost.
# Writes docs/benchmarks/README.md, CSVs and charts (as root; under 60 min).
# BENCH_QUICK=1: N = 100, 1,000, 5,000, fewer changes and rounds (< 10 min).
bench: build k8s-tools
	$(GO) run ./test/bench/control -headline -out docs/benchmarks -agent $(BIN)/fastpath-agent $(if $(BENCH_QUICK),-quick)

# Measures; asserts nothing. Results go to docs/benchmarks/.
bench-datapath: build
	$(GO) run ./test/bench/datapath -out docs/benchmarks

# CNI ADD latency of 100 pods, 10 at a time (as root). Writes docs/benchmarks/cni.md.
bench-cni:
	$(GO) run ./test/bench/cni -out docs/benchmarks

# Pod-to-pod TCP across nodes: plain veth vs native vs vxlan (iperf3).
bench-crossnode:
	$(GO) run ./test/bench/crossnode -out docs/benchmarks -reps 5
# The L7 proxy vs the same pod-to-pod path with L4 policy only, through the
# node's datapath in fp- namespaces (issue 6's budget; root): req/s (closed
# loop) and p50/p99 (paced, same load on both paths at 64) at 1 and 64
# connections, proxy on one core; the proxy alone on loopback; RSS at 1,000
# idle connections. Writes docs/benchmarks/l7.md. About 2 minutes;
# BENCH_QUICK=1: 1s points, 1 repetition.
bench-l7:
	$(GO) run ./test/bench/l7 -out docs/benchmarks $(if $(BENCH_QUICK),-quick)

# fastpath vs the real kube-proxy (iptables, nftables) on one apiserver:
# cold start, change latency, CPU per change, RSS (issue 3's budget).
# BENCH_QUICK=1: N = 100, 1,000 and 20 changes (about 5 minutes).
bench-control: build k8s-tools
	$(GO) run ./test/bench/control -out docs/benchmarks -agent $(BIN)/fastpath-agent $(if $(BENCH_QUICK),-quick)

# NetworkPolicy with 1,000 pods and 500 policies on the lab (issue 5's budget):
# change latency on every node, agent CPU, connection rate with 1 vs 500
# policies. As root, about 5 minutes. Writes docs/benchmarks/policy.md.
bench-policy: build k8s-tools
	$(GO) run ./test/bench/policy -out docs/benchmarks -bin $(BIN)

clean:
	rm -rf $(BIN)
