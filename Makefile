# Development entry points. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# molecule and ansible-lint call ansible-config, ansible-playbook... by name.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Every scenario under molecule/ except the demo, which is not a test, in two lanes
# (tools/run-scenarios), each running its own list in order (and then whatever is left).
# From the scenario times of the last cold run (s): indexes 1521, default 1247, debian13 869,
# cluster about 600 with its reader, supervisor 433, upgrade 416. Lane A, on Debian 12 only,
# meets no wait for Debian 13's image; lane B reaches debian13 after 20 minutes.
LANES := indexes+cluster+upgrade default+debian13+supervisor
ALL_SCENARIOS := $(filter-out demo resources,$(notdir $(wildcard molecule/*)))
SCENARIOS ?= $(LANES) $(filter-out $(subst +, ,$(LANES)),$(ALL_SCENARIOS))
COLLECTION_LINK := .ansible/collections/ansible_collections/cheeseshop/pypi
IMAGE_LOG_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cheeseshop-images

.PHONY: help venv docker lint unit build sanity checks docs test test-images scenario demo demo-down bench timings lock clean

help:
	@echo "make demo       bring up a local private index in a container and print how to use it"
	@echo "make demo-down  remove the demo container"
	@echo "make bench      benchmark the demo stack against nginx's static ceiling (not a test)"
	@echo "make timings    fresh converge, no-op rerun and users-only run, medians (not a test)"
	@echo "make test       every molecule scenario ($(SCENARIOS)), and beside them make checks"
	@echo "make checks     lint, unit tests, build and sanity"
	@echo "make scenario S=debian13   one molecule scenario"
	@echo "make lint       yamllint, ansible-lint (production), argument_specs vs defaults, pyflakes,"
	@echo "                declared collection dependencies, inventories"
	@echo "make build      build the collection; install it on ansible-core alone with its dependencies"
	@echo "make sanity     ansible-test sanity on the built artifact (Python 3.11; needs only PyPI)"
	@echo "make docs       regenerate docs/roles/*.md from each role's meta/argument_specs.yml"
	@echo "make unit       unit tests of the collection's modules, the aws_backup role against moto (no Docker)"

$(BIN)/molecule: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Make cheeseshop.pypi.* resolve to this checkout (see ansible.cfg).
$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

venv: $(BIN)/molecule $(COLLECTION_LINK)

docker:
	tools/ensure-docker

# The example inventory's vault is encrypted with a TEST-ONLY password; ansible-lint reads it
# decrypted so the vaulted variables are linted too.
lint: venv
	$(BIN)/yamllint --strict .
	ANSIBLE_VAULT_PASSWORD_FILE=inventories/vault-password.test-only \
	  $(BIN)/ansible-lint --profile production --strict
	$(BIN)/python tools/check-argument-specs roles
	$(BIN)/python -m pyflakes molecule/resources/tests molecule/resources/plugins tests plugins tools/timings tools/bench \
	  tools/check-argument-specs tools/check-doc tools/check-dependencies tools/check-core-install \
	  tools/role-docs tools/check-scenario-tests tools/restore-timing
	$(BIN)/python tools/check-dependencies
	$(BIN)/python tools/check-scenario-tests
	$(BIN)/python tools/role-docs --check
	tools/check-inventories

# Modules run against this machine's real libcrypt; the import path is the linked collection.
# tests/unit/aws starts moto's server (the AWS API emulator) on a free loopback port.
unit: venv
	PYTHONPATH=$(CURDIR)/.ansible/collections $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# The artifact users install; proves it builds, that its playbooks resolve by FQCN, and that it
# works with ansible-core alone plus the dependencies galaxy.yml declares.
build: venv
	rm -rf build && mkdir -p build
	$(BIN)/ansible-galaxy collection build --output-path build .
	$(BIN)/ansible-galaxy collection install --force -p build/collections build/cheeseshop-pypi-*.tar.gz
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections $(BIN)/ansible-playbook \
	  -i inventories/example --vault-password-file inventories/vault-password.test-only \
	  --syntax-check cheeseshop.pypi.site cheeseshop.pypi.users cheeseshop.pypi.restore cheeseshop.pypi.aws_backup
	$(BIN)/python tools/check-core-install build/cheeseshop-pypi-*.tar.gz
	# Every module's and filter's documentation must parse. ansible-doc only warns (and exits 0)
	# about a plugin it cannot document, so its JSON must hold a doc for each one.
	for plugin in $(addprefix module:,$(basename $(notdir $(wildcard plugins/modules/*.py)))) \
	              $(addprefix filter:,$(basename $(notdir $(wildcard plugins/filter/*.yml)))); do \
	  ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections $(BIN)/ansible-doc -t $${plugin%%:*} --json \
	    cheeseshop.pypi.$${plugin#*:} | $(BIN)/python tools/check-doc cheeseshop.pypi.$${plugin#*:} || exit 1; \
	done

# What Galaxy and Automation Hub publishing rely on; see tools/sanity for the offline pip bootstrap.
sanity: venv
	tools/sanity

# The role variable pages are generated: edit argument_specs (or the role's README), then this.
docs: venv
	$(BIN)/python tools/role-docs

# The test images are built (debootstrap, then the tooling; minutes on a cold machine, nothing
# when current) in the background; each scenario's dependency step waits for its own (tools/
# test-image takes a lock) or builds what failed. The checks (lint, unit tests, build, sanity)
# run beside the scenarios, not before them: they keep one core busy for about four minutes,
# while the scenarios' first minutes wait on images and containers (docs/contributing.md).
test: test-images venv docker
	tools/run-scenarios --checks "$(MAKE) --no-print-directory checks" $(SCENARIOS)

checks: lint unit build sanity

test-images: docker
	@mkdir -p $(IMAGE_LOG_DIR)
	@echo "test images: building in the background (log: $(IMAGE_LOG_DIR)/background.log)"
	@(tools/test-image debian12-tools debian13-tools > $(IMAGE_LOG_DIR)/background.log 2>&1 &)

scenario: venv docker
	$(BIN)/molecule test -s $(S)

demo: venv docker
	$(BIN)/molecule converge -s demo
	@echo; cat .demo/access.txt

demo-down: venv
	$(BIN)/molecule destroy -s demo

# Outside the test run: medians of provisioning runs on fresh containers of the default
# scenario (about 5 minutes per run). TIMINGS_ARGS="--runs 5" for more.
timings: venv docker
	tools/timings $(TIMINGS_ARGS)

# Outside the test run: fills the demo's index and compares the stack with nginx serving the
# same bytes statically, in one run. BENCH_ARGS="--projects 500" for a quicker look.
bench: demo
	tools/bench $(BENCH_ARGS)

# Re-resolve requirements-dev.txt from requirements-dev.in (needs the package index).
lock:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/pip install --quiet -r requirements-dev.in
	{ echo "# Generated by 'make lock' from requirements-dev.in; do not edit by hand."; \
	  build/lock/bin/pip freeze --all | grep -vE '^(pip|setuptools|wheel)=='; } > requirements-dev.txt

clean:
	rm -rf build .ansible
