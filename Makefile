# The lab's single entry point. `make lab` and `make test` are the two commands
# a newcomer needs; both set up everything they use first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps test-deps lab test down

# Debian packages: WeasyPrint's text libraries (PDF reports), for the lab; Chromium
# for the tests only (they open the HTML report, the widget panel and the UIs in a
# real browser), so `make test` installs it and `make lab` does not; Docker's engine and
# debootstrap for the compose stack test (tests/test_compose_stack.py: a private dockerd,
# images built on a Debian base made with debootstrap).
DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0
TEST_DEBS := chromium docker.io debootstrap

$(BIN)/labkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[test]'
	touch $@

## setup: Python environment plus every service, built into the per-user cache
setup: $(BIN)/labkit system-deps
	$(BIN)/labkit install

system-deps test-deps: PKGS = $(if $(filter test-deps,$@),$(TEST_DEBS),$(DEBS))
system-deps test-deps:
	@if dpkg -s $(PKGS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS); \
	else echo "Missing Debian packages: $(PKGS). Fix: sudo apt-get install $(PKGS)"; exit 2; fi

## lab: the main job: stand the stack up, run every notebook headless (the
## experiments among them), and write the SLA report under reports/
lab: setup
	$(BIN)/labkit up
	$(BIN)/labkit notebooks --out reports/notebooks
	$(BIN)/labkit status

## test: the whole test suite: the flow module's Node tests and the fast tier first (they start
## nothing, so a broken unit fails in a minute), then every test that needs the real services
## (it starts and stops its own stack)
test: setup test-deps
	cd stack/nodered/test && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	node --test stack/nodered/test/*.test.js
	$(BIN)/pytest -m "not stack" --durations=5
	$(BIN)/pytest -m stack --durations=20

## down: stop the lab's services (data is kept)
down:
	$(BIN)/labkit down
