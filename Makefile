# Sluice — the two commands a newcomer needs:
#   make quickstart   run Sluice's main job end to end (async invocations on the embedded queue)
#   make test         provision the real brokers and run every test
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BROKERS ?= all
# 2 cores: the JVM brokers need room; keep package parallelism modest.
TEST_FLAGS ?= -count=1 -timeout 30m -p 2
# rocketmq-client-go has a data race of its own (rmqClient.Shutdown writes the
# client's state while a rebalance's InvokeSync reads it, internal/client.go
# 555 vs 576); it cannot be fixed from outside, so the packages whose tests run
# the client's consumer (the connector, and the task queue on RocketMQ) run
# without the race detector. Everything else runs with it.
NORACE_PKGS := ./connectors/rocketmq/... ./runtime/queue/rocketq/...
RACE_PKGS = $(shell $(GO) list ./... | grep -v -e '/connectors/rocketmq' -e '/runtime/queue/rocketq')

.PHONY: all build test lint brokers brokers-down quickstart quickstart-kafka bench generate clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sluice ./cmd/sluice

## brokers: start the real brokers the tests need (idempotent; installs what is missing)
brokers:
	scripts/brokers.sh up $(BROKERS)

brokers-down:
	scripts/brokers.sh down all

## lint: formatting, vet, and a tidy module
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff

## test: every test, against real brokers that this target starts itself
test: brokers lint
	$(GO) test $(TEST_FLAGS) $(NORACE_PKGS)
	$(GO) test -race $(TEST_FLAGS) $(RACE_PKGS)

## quickstart: the async invocation API on the embedded queue (no broker needed):
## example function + Sluice + tasks submitted with curl, their states and results
quickstart:
	scripts/quickstart-async.sh

## quickstart-kafka: local Kafka + example function + Sluice pipeline + sample events
quickstart-kafka:
	scripts/quickstart.sh

## bench: benchmark programs (BENCHMARKS.md, docs/benchmarks.md); B=b1 runs one
## scenario (comma-separate several), BENCH_FLAGS adds flags (-runs 5, -events N, -b2.phase 10s)
bench:
	$(GO) build -o bin/sluice-bench ./bench/cmd/sluice-bench
	bin/sluice-bench $(if $(B),-scenarios $(B)) $(BENCH_FLAGS)

## generate: regenerate docs/reference.md and the JSON Schema from the Go types
generate:
	$(GO) run ./pipelines/internal/gendocs

clean:
	rm -rf bin
