# provisioner: `make run` to try it, `make test` before every commit.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
STAMP  := $(VENV)/.installed
LAB_STAMP := $(VENV)/.lab-installed

# Tests that drive real clients (QEMU, Chromium, curl...) or several server processes.
SLOW_TESTS := e2e or slow

.PHONY: run test test-fast test-unit lint format bench bench-deps e2e-deps e2e-full e2e-full-deps clean help

# Real clients the end-to-end tests drive, as command:Debian-package pairs.
E2E_TOOLS := curl:curl busybox:busybox qemu-system-x86_64:qemu-system-x86 \
             /usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu cloud-init:cloud-init \
             /vmlinuz:linux-image-amd64 chromium:chromium chromedriver:chromium-driver \
             /usr/sbin/nginx:nginx-light ip:iproute2 /usr/sbin/dnsmasq:dnsmasq-base openssl:openssl \
             /usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux:debian-installer-12-netboot-amd64 \
             socat:socat /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf dash:dash \
             setpriv:util-linux systemd-analyze:systemd /usr/bin/python3:python3 \
             /usr/share/doc/python3-venv:python3-venv /usr/lib/ipxe/undionly.kpxe:ipxe \
             /usr/sbin/libvirtd:libvirt-daemon-system /usr/bin/virsh:libvirt-clients \
             /usr/bin/tini:tini /usr/bin/ipmitool:ipmitool
# What `pip install -e '.[test]'` needs to build libvirt-python (virtualbmc's binding; it has
# no wheel), installed by `make e2e-deps` before the virtualenv is made.
E2E_TOOLS += /usr/include/libvirt/libvirt.h:libvirt-dev /usr/bin/pkg-config:pkg-config \
             /usr/bin/gcc:gcc /usr/include/python3.11/Python.h:python3-dev
# What the opt-in full Debian install adds: a disk image (its caching proxy to the archive is
# the test's own, tests/archivecache.py).
E2E_FULL_TOOLS := qemu-img:qemu-utils
# The load generator the benchmarks drive.
BENCH_TOOLS := wrk:wrk curl:curl /usr/sbin/nginx:nginx-light

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
	@echo "              (make run HOST=0.0.0.0 serves the LAN: set API_TOKENS first)"
	@echo "make test   - install test tools, run ruff and the whole pytest suite"
	@echo "make test-fast - ruff, then tests/unit and tests/api (no real client, no extra"
	@echo "              server or console-script process) on every core (pytest-xdist): ~2 min"
	@echo "make test-unit - tests/unit only: pure rules, no app or database (seconds)"
	@echo "make bench  - performance benchmarks (not part of make test)"
	@echo "make e2e-deps - install the real clients end-to-end tests drive (Debian packages)"
	@echo "make bench-deps - install the load generator the benchmarks drive (wrk)"
	@echo "make e2e-full - install Debian 12 for real in QEMU through a caching proxy (hours; not in CI)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The `lab` extra (virtualbmc, libvirt-python) builds against libvirt-dev (make e2e-deps).
$(LAB_STAMP): $(STAMP)
	@if pkg-config --exists libvirt 2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet -e '.[test,lab]' && touch $@; \
	else echo "libvirt-dev missing (make e2e-deps): the virtualbmc tests will skip"; fi

run: $(STAMP)
	$(BIN)/provisioner db upgrade
	$(BIN)/provisioner serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint e2e-deps $(LAB_STAMP)
	$(BIN)/python -m pytest

# Everything but tests/e2e (and the few e2e/slow-marked tests left in other modules); new
# test modules not yet sorted into a layer, at tests/ top level, run here too.
test-fast: lint
	$(BIN)/python -m pytest -m "not ($(SLOW_TESTS))" -n auto --ignore=tests/e2e tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

e2e-deps:
	$(call debian_tools,$(E2E_TOOLS),install them or those tests skip)

e2e-full-deps: e2e-deps
	$(call debian_tools,$(E2E_FULL_TOOLS),install them or the full install skips)

# A whole Debian 12 install in QEMU (TCG: hours), reporting first_boot; see docs/installers.md.
e2e-full: $(STAMP) e2e-full-deps
	PROVISIONER_E2E_FULL=1 $(BIN)/python -m pytest -s -p no:cacheprovider \
	  tests/e2e/test_e2e_debian_installer.py -k full_install

bench-deps:
	$(call debian_tools,$(BENCH_TOOLS),install it or the benchmarks stop)

bench: $(STAMP) bench-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
