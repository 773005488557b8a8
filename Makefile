# The two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
GO        ?= go
WASM      := build/plugin.wasm
# The module is built with one pinned toolchain (the go command fetches it through the module
# proxy where another is installed): the runtime patch's anchors then always match, and the same
# source gives the same module everywhere. COMPAT=0 builds without the patch (Envoy ≥ 1.39 only).
WASM_TOOLCHAIN ?= go1.26.8
COMPAT    ?= 1
FUZZTIME  ?= 30s
# Fuzz targets run longer by `make fuzz`; `make test` runs only their seed corpora.
FUZZ_TARGETS := \
	./filter/config:FuzzParse \
	./filter/config:FuzzNormalizePathFastPath \
	./filter/internal/oauth:FuzzParseResponse \
	./filter/internal/cache:FuzzDecodeSlot \
	./filter/internal/cache:FuzzDecodeServiceToken \
	./filter/internal/oauth:FuzzUserTokenExpiry \
	./filter/internal/seal:FuzzOpen

.PHONY: all build test vet run bench fuzz oci-layout push clean stack stack-down test-stack

# The real stack (make stack): Docker Compose, else Podman Compose.
COMPOSE   ?= $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; else echo podman compose; fi)

# Image publishing: make push IMG=registry/repo:tag [FORMAT=compat|oci|both] [INSECURE=1]
IMG       ?=
FORMAT    ?= both
OCI_OUT   := build/oci

all: build

## build: compile the filter to build/plugin.wasm with upstream Go (no TinyGo) and the runtime patch
## for older Envoys (internal/compat; COMPAT=0 without), then drop the body and trailer callback
## exports (Envoy then never enters the VM per body chunk; internal/wasmstrip)
build:
	@mkdir -p build
ifeq ($(COMPAT),0)
	GOTOOLCHAIN=$(WASM_TOOLCHAIN) GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $(WASM) ./filter
else
	GOTOOLCHAIN=$(WASM_TOOLCHAIN) $(GO) run ./cmd/compat-overlay -out build/compat >/dev/null
	GOTOOLCHAIN=$(WASM_TOOLCHAIN) GOOS=wasip1 GOARCH=wasm $(GO) build -overlay build/compat/overlay.json -buildmode=c-shared -trimpath -o $(WASM) ./filter
endif
	$(GO) run ./cmd/wasm-strip $(WASM)
	@echo "built $(WASM) ($$(wc -c < $(WASM)) bytes)"

## vet: static checks; every filter package must also compile for the wasm target
vet:
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) build ./filter/...

## test: build the module and run every test, against Go code and against the compiled module
test: build vet
	TOKEN_EXCHANGE_WASM=$(CURDIR)/$(WASM) $(GO) test -count=1 ./...

## run: the local demo on embedded defaults: IdP, echo upstream and the filter in a proxy, then a self-check
run: build
	$(GO) build -o build/demo ./cmd/demo
	./build/demo -wasm $(WASM)

## bench: Go benchmarks of the hot paths (ns/op, allocs/op), then the end-to-end benchmark in the
## e2e host (module time in wazero and, with node, V8; burst, refresh, fleet, 100,000 users), written
## to build/bench.json (BENCH_USERS, BENCH_OUTAGE shorten it; BENCH_ONLY=module|refresh|fleet|users)
bench: build
	TOKEN_EXCHANGE_WASM=$(CURDIR)/$(WASM) $(GO) test -run='^$$' -bench=. -benchmem ./...
	$(GO) run ./e2e/bench -wasm $(WASM) -out build/bench.json

## fuzz: run each fuzz target for FUZZTIME
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzzing $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

## oci-layout: write the module as reproducible OCI image layouts build/oci/compat and build/oci/wasm
oci-layout: build
	$(GO) run ./cmd/wasm-image layout -wasm $(WASM) -out $(OCI_OUT)

## push: push the module as OCI images Istio's WasmPlugin accepts (compat as TAG, oci as TAG-oci)
push: build
	@test -n "$(IMG)" || { echo "usage: make push IMG=registry/repo:tag [FORMAT=compat|oci|both] [INSECURE=1]"; exit 2; }
	$(GO) run ./cmd/wasm-image push -wasm $(WASM) -image $(IMG) -format $(FORMAT) $(if $(INSECURE),-insecure)

## stack: build the module and start the real stack (Keycloak, Envoy, the echo upstream) with
## Docker or Podman Compose (envoy-config/compose.yaml); ENVOY_IMAGE and KEYCLOAK_IMAGE pick versions
stack: build
	$(COMPOSE) -f envoy-config/compose.yaml up -d --build --wait

## stack-down: stop the stack
stack-down:
	$(COMPOSE) -f envoy-config/compose.yaml down

## test-stack: the end-to-end tests that make sense against a real Keycloak and Envoy, against make stack
test-stack:
	E2E_IDP_URL=http://127.0.0.1:18180 E2E_PROXY_URL=http://127.0.0.1:10000 E2E_ADMIN_URL=http://127.0.0.1:9901 \
		$(GO) test -count=1 -v -run '^TestStack' ./e2e

clean:
	rm -rf build
