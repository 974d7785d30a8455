# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs the project.
PYTHON ?= python3
# torch first, pinned: an unpinned torch pulls a CUDA build of several GB; 2.13.0 is a CPU build here.
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out

.PHONY: venv demo prepare-demo test lint iac-check bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,train]"
	touch $@

venv: $(VENV)/.installed

# The whole pipeline definition, run locally on the sample clip: the LoRA is trained on a random-weight
# stand-in of Stable Diffusion XL (no weights can be downloaded offline), Evaluate scores base and fine-tuned,
# and the run ends in RegisterModel (exit 0) or in the QualityGateFailed Fail step with the figures (exit 3).
demo: venv
	@$(VENV)/bin/storyboard run --local --video "$$($(PY) -m pipeline.sample_media)" \
		--characters examples/bbb_sample/characters --config examples/bbb_sample/pipeline.yaml \
		--runs $(DEMO_OUT)/runs --execution-id demo-$$(date +%Y%m%d-%H%M%S); \
	code=$$?; if [ $$code -ne 0 ] && [ $$code -ne 3 ]; then exit $$code; fi; \
	echo "Run folder: $$(ls -d $(DEMO_OUT)/runs/demo-* | tail -n 1) (CaptionImages/output/dataset: the training set;" \
		"FineTune/model-output: model.tar.gz; Evaluate/output/evaluation: report.html and loss_curve.png)"

# The data preparation alone, into one folder.
prepare-demo: venv
	$(VENV)/bin/storyboard prepare --video "$$($(PY) -m pipeline.sample_media)" \
		--characters examples/bbb_sample/characters --config examples/bbb_sample/pipeline.yaml \
		--out $(DEMO_OUT)/prepare --overwrite
	@echo "Open $(DEMO_OUT)/prepare/report.html"

lint: venv iac-check
	$(VENV)/bin/ruff check .

# cfn-lint and checkov on the CloudFormation template, zero findings (suppressions carry their reason in the
# template); checkov lives in its own environment (pipeline/infra/requirements-checks.txt says why).
$(VENV)/iac-checks/.installed: pipeline/infra/requirements-checks.txt
	$(PYTHON) -m venv $(VENV)/iac-checks
	$(VENV)/iac-checks/bin/pip install -q -r pipeline/infra/requirements-checks.txt
	touch $@

iac-check: $(VENV)/iac-checks/.installed
	$(VENV)/iac-checks/bin/cfn-lint pipeline/infra/template.yaml
	$(VENV)/iac-checks/bin/checkov -f pipeline/infra/template.yaml --framework cloudformation --compact --quiet \
		--skip-download

test: lint
	$(VENV)/bin/python -m pytest -q tests

bench: venv
	$(PY) bench/bench_sampling.py
	$(PY) bench/bench_lora.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) runs
