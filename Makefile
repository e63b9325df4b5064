# The lab's single entry point. `make lab` and `make test` are the two commands
# a newcomer needs; both set up everything they use first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps lab test down

# Debian packages: WeasyPrint's text libraries (PDF reports) and Chromium (the
# tests open the HTML report and the widget panel in a real browser).
DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 chromium

$(BIN)/labkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## setup: Python environment plus every service, built into the per-user cache
setup: $(BIN)/labkit system-deps
	$(BIN)/labkit install

system-deps:
	@if dpkg -s $(DEBS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); \
	else echo "Missing Debian packages: $(DEBS). Fix: sudo apt-get install $(DEBS)"; exit 2; fi

## lab: the main job: stand the stack up, run every notebook headless (the
## experiments among them), and write the SLA report under reports/
lab: setup
	$(BIN)/labkit up
	$(BIN)/labkit notebooks --out reports/notebooks
	$(BIN)/labkit status

## test: the whole test suite; it starts and stops the services it uses
test: setup
	$(BIN)/pytest

## down: stop the lab's services (data is kept)
down:
	$(BIN)/labkit down
