# Keeper: the two commands are `make run` and `make test`. Everything else is below.
SHELL := /bin/bash
CARGO ?= cargo
JOBS ?= 2
DATA_DIR ?= ./data
CLIENT_ADDR ?= 127.0.0.1:7181
SEEDS ?= 10000
SEED_START ?= 0
MEMBER_SEEDS ?= 10000
MEMBER_SEED_START ?= 0
CHAOS_RUNS ?= 26
CHAOS_SECS ?= 60
CHAOS_SCHEDULE ?= all
CHAOS_MEMBERS ?= 3,5
CHAOS_SEED ?=
export CARGO_BUILD_JOBS := $(JOBS)
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

.PHONY: deps build run test lint fmt sim bench bench-locks chaos api-fuzz cluster cluster-stop docker k8s-validate clean

## deps: install the system packages the build needs (libclang for RocksDB's bindgen, a C++ compiler).
deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --release -j$(JOBS) -p keeper-server -p keeper-cli -p keeper-bench

## run: build and start a single-node Keeper on $(CLIENT_ADDR), data in $(DATA_DIR).
run: build
	mkdir -p $(DATA_DIR)
	$(TARGET_DIR)/release/keeper --data-dir $(DATA_DIR) --client-addr $(CLIENT_ADDR)

## test: the whole default suite (unit, property, HTTP, crash, cluster, 1,000+ simulator seeds).
test: deps
	$(CARGO) test --workspace -j$(JOBS)

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -j$(JOBS) -- -D warnings

fmt:
	$(CARGO) fmt --all

## sim: run the ZAB simulator over seeds SEED_START..SEED_START+SEEDS, then the whole-member
## simulator over MEMBER_SEED_START..MEMBER_SEED_START+MEMBER_SEEDS (release builds).
sim:
	$(CARGO) run --release -j$(JOBS) -p keeper-zab --bin zab-sim -- --seeds $(SEEDS) --seed-start $(SEED_START)
	$(CARGO) run --release -j$(JOBS) -p keeper-server --bin member-sim -- --seeds $(MEMBER_SEEDS) --seed-start $(MEMBER_SEED_START)

## bench: fresh 3-member cluster (fsync on), set/get/lget at 1/16/64 clients, one table
## (falls back to a standalone member, loudly, when no leader is elected). See scripts/bench.sh.
bench: deps
	./scripts/bench.sh

## bench-locks: the lock recipe on a fresh 3-member cluster: uncontended acquire+release at
## 64 clients on 64 locks, and the hand-off latency of one lock contended by 64 clients.
bench-locks: deps
	BENCH_OPS="lock handoff" BENCH_CLIENTS="64" ./scripts/bench.sh

## chaos: the chaos campaign: $(CHAOS_RUNS) runs of $(CHAOS_SECS) s on real clusters of $(CHAOS_MEMBERS)
## members (one size per pass), cycling through the nemesis schedules $(CHAOS_SCHEDULE); every history checked.
## A violation prints its seed and reproduce command and fails the target. See docs/testing.md.
chaos: deps
	$(CARGO) build --release -j$(JOBS) -p keeper-server --bin keeper -p keeper-tests --bin keeper-chaos
	$(TARGET_DIR)/release/keeper-chaos --runs $(CHAOS_RUNS) --duration-secs $(CHAOS_SECS) \
		--members $(CHAOS_MEMBERS) --schedule $(CHAOS_SCHEDULE) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) \
		--out $(TARGET_DIR)/chaos

## api-fuzz: Schemathesis (PyPI) fuzzes a fresh standalone member against api/openapi.yaml for
## FUZZ_SECS (180) s; FUZZ_SEED=N reproduces a run. See scripts/api-fuzz.sh and docs/testing.md.
api-fuzz: deps
	./scripts/api-fuzz.sh

## cluster: start a local 3-member cluster (client ports 7181-7183, state in ./.cluster).
cluster: deps
	./scripts/cluster.sh start

## cluster-stop: stop the members started by `make cluster` (by their PID files).
cluster-stop:
	./scripts/cluster.sh stop

## docker: build the container image keeper:$(IMAGE_TAG) from deploy/docker/Dockerfile
## (says so in one line when no container engine works here).
IMAGE_TAG ?= 0.1.0
docker:
	@./scripts/docker-build.sh keeper:$(IMAGE_TAG)

## k8s-validate: every manifest and kustomize build against the Kubernetes schemas, the
## Dockerfile with hadolint, the alert rules (installs the PyPI validators if missing).
k8s-validate:
	./scripts/k8s-validate.sh

clean:
	$(CARGO) clean
