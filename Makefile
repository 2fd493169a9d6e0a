# zooserve: the two commands a newcomer needs are `make up` and `make test`.
VENV   ?= .venv
PYTHON ?= python3.11
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
MODELS ?= lenet5 resnet18

.PHONY: up install demo serve stop test test-fast lint bench clean v2clients images compose-test

up: install demo  ## install everything, build the default models, serve them, predict over REST + gRPC

install: $(VENV)/.installed  ## virtualenv with pinned torch/TorchServe, the package, generated gRPC stubs

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml hatch_build.py $(wildcard proto/*.proto)
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .  # hatch_build.py generates the gRPC stubs from proto/
	touch $@

demo: install  ## build $(MODELS), start TorchServe, make real predictions
	$(BIN)/zooserve build $(MODELS)
	$(BIN)/zooserve stop >/dev/null
	$(BIN)/zooserve serve $(MODELS)
	$(PY) client/demo.py
	@echo "TorchServe keeps running: try 'zooserve predict resnet18 client/samples/china.jpg --grpc'; stop it with 'make stop'"

serve: install
	$(BIN)/zooserve serve $(MODELS)

stop:
	$(BIN)/zooserve stop

test: install v2clients  ## the whole suite: unit + integration (real TorchServe, gRPC, Prometheus, v2 clients)
	$(BIN)/pytest || [ $$? -eq 5 ]  # 5 = no tests collected

test-fast: install  ## unit tests only (no server)
	$(BIN)/pytest tests/unit

V2CLIENTS := .venv-v2clients
v2clients: $(V2CLIENTS)/.requirements-sha256  ## tritonclient + kserve (protobuf 6) in a venv of their own

$(V2CLIENTS)/.requirements-sha256: requirements-v2clients.txt
	$(PYTHON) -m venv --clear $(V2CLIENTS)
	$(V2CLIENTS)/bin/python -m pip install -q --disable-pip-version-check -r requirements-v2clients.txt
	sha256sum requirements-v2clients.txt | cut -d' ' -f1 > $@

lint: install  ## ruff (style, line length) and import-linter (the one-way layers of docs/architecture.md)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: install  ## model-only vs served vs stock TorchServe; writes docs/benchmarks/
	$(BIN)/zooserve bench all resnet50

clean:
	rm -rf .zooserve model_store/*.mar

images:  ## Docker images: zooserve:cpu, zooserve-prometheus, zooserve-locust (docs/deploy.md; IMAGES=gpu too)
	docker/images.sh $(IMAGES)

compose-test: install  ## the docker-marked test: build the images, docker compose up, predict, load, down
	$(BIN)/pytest -m docker tests/docker -p no:cacheprovider
