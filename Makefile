# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/storyboard prepare --video "$$($(PY) -m pipeline.sample_media)" \
		--characters examples/bbb_sample/characters --config examples/bbb_sample/pipeline.yaml \
		--out $(DEMO_OUT)/prepare --overwrite
	@echo "Open $(DEMO_OUT)/prepare/report.html"

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/python -m pytest -q tests

bench: venv
	$(PY) bench/bench_sampling.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) runs
