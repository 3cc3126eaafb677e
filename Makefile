# date-edit: `make test` and `make demo` work on a fresh clone (they create .venv and install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser test demo toy-model toy-eval toy-date toy-gradient-pass toy-edit toy-edit-controls bench-tiny lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# the browser test (tests/test_ui_browser.py) drives headless Chromium: installed from the distribution's packages
# when missing and we are root; never fails (without a browser that test skips, saying why)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: installing chromium and chromium-driver with apt-get"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
	    >/tmp/date-edit-browser-apt.log 2>&1 \
	    || echo "make browser: apt-get failed (see /tmp/date-edit-browser-apt.log); the browser test will skip"; \
	else echo "make browser: no chromium/chromedriver and not root: the browser test will skip" \
	  "(as root: apt-get install chromium chromium-driver)"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

demo: $(STAMP)
	$(BIN)/python -m date_edit.demo --out outputs/demo

toy-model: $(STAMP)
	$(BIN)/python -m date_edit.toy.train --out date_edit/assets/toy --seed 0

toy-eval: $(STAMP)
	$(BIN)/python -m date_edit.toy.train --eval-only --out date_edit/assets/toy
	$(BIN)/python -m date_edit.toy.train --eval-only --fresh-seeds --out date_edit/assets/toy

toy-edit: $(STAMP)
	$(BIN)/python -m benchmarks.studies.toy_edit

toy-edit-controls: $(STAMP)
	$(BIN)/python -m benchmarks.studies.toy_edit_controls --split val
	$(BIN)/python -m benchmarks.studies.toy_edit_controls --split test

toy-date: $(STAMP)
	$(BIN)/python -m benchmarks.studies.toy_date

toy-gradient-pass: $(STAMP)
	$(BIN)/python -m benchmarks.studies.toy_gradient_pass

bench-tiny: $(STAMP)
	$(BIN)/python -m benchmarks.cost.date_cost --tiny

lint: $(STAMP)
	$(BIN)/python -m ruff check date_edit cli tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
