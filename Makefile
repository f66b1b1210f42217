# ChittyCan: `make run` serves the gateway, `make test` installs what it needs and runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
PROTOS := $(wildcard proto/chittycan/v1/*.proto)

.PHONY: run test install proto lint check bench clean node

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/can serve

proto: install
	rm -f proto/chittycan/v1/*_pb2*.py proto/chittycan/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=proto --grpc_python_out=proto \
		--mypy_out=proto --mypy_grpc_out=proto $(PROTOS)

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

node: node_modules/.installed

test: install node
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check engine facade clients tests
	$(BIN)/ruff format --check engine facade clients tests
	$(BIN)/mypy engine facade clients

check: proto lint test
	git diff --exit-code proto/

clean:
	rm -rf $(VENV) node_modules .chittycan
