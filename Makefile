# provisioner: `make run` to try it, `make test` before every commit.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
STAMP  := $(VENV)/.installed

export PROVISIONER_WORKFLOWS_DIR ?= $(CURDIR)/examples/workflows

.PHONY: run test lint format bench bench-deps e2e-deps clean help

# Real clients the end-to-end tests drive, as command:Debian-package pairs.
E2E_TOOLS := curl:curl busybox:busybox qemu-system-x86_64:qemu-system-x86 \
             /usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu cloud-init:cloud-init \
             /vmlinuz:linux-image-amd64 chromium:chromium chromedriver:chromium-driver \
             setpriv:util-linux systemd-analyze:systemd /usr/bin/python3:python3 \
             /usr/share/doc/python3-venv:python3-venv
# The load generator the benchmarks drive.
BENCH_TOOLS := wrk:wrk

# Install the Debian packages of the command:package pairs in $(1) whose command is missing
# (as root; otherwise say what is missing and why it matters, $(2)).
define debian_tools
	@missing=""; for pair in $(1); do tool=$${pair%%:*}; \
	  [ -e "$$tool" ] || command -v "$$tool" >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "$@: missing$$missing ($(2))"; fi; \
	fi
endef

help:
	@echo "make run    - install into $(VENV), migrate, serve on http://$(HOST):$(PORT)/"
	@echo "make test   - install test tools, run ruff and the whole pytest suite"
	@echo "make bench  - performance benchmarks (not part of make test)"
	@echo "make e2e-deps - install the real clients end-to-end tests drive (Debian packages)"
	@echo "make bench-deps - install the load generator the benchmarks drive (wrk)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(STAMP)
	$(BIN)/provisioner db upgrade
	$(BIN)/provisioner serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

e2e-deps:
	$(call debian_tools,$(E2E_TOOLS),install them or those tests skip)

bench-deps:
	$(call debian_tools,$(BENCH_TOOLS),install it or the benchmarks stop)

bench: $(STAMP) bench-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
