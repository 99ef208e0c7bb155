# Two commands do all the set-up on a fresh machine with only Python 3.11:
#   make demo   - the whole notebook series on the synthetic head-CT phantom
#   make test   - the test suite (unit, CLI end-to-end, notebooks under papermill, the docs' examples and site)
# The documentation: make docs (build + serve on http://127.0.0.1:8000), make docs-build (site/, --strict).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.molre-installed

.PHONY: demo test test-fast install kernel bench gallery gpu-check rehearsal phantom-study phantom-study-untuned docs docs-build docs-figures

# The venv is rebuilt when pyproject.toml changes; the kernel is registered as part of set-up,
# because papermill and JupyterLab both look for a kernel named "molre".
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m molre_lib.workbook.kernel --sys-prefix
	touch $(STAMP)

install: $(STAMP)

kernel: $(STAMP)
	$(PY) -m molre_lib.workbook.kernel --sys-prefix

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/molre demo

gallery: $(STAMP)
	$(VENV)/bin/molre gallery --out figures/phantom

bench: $(STAMP)
	$(PY) benchmarks/adapters.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/train.py

gpu-check: $(STAMP)
	$(PY) benchmarks/gpu.py

# Every study backbone at full size on the CPU (random init): one MoLRE step with the trainer, evaluate,
# predict, Grad-CAM, routing log; time and peak RSS per backbone -> benchmarks/results/rehearsal.json.
# Slow (MedSigLIP-448 alone takes minutes and ~9 GB): run it on a quiet machine.
rehearsal: $(STAMP)
	nice $(PY) benchmarks/rehearsal.py

# The phantom study, tuned (notebooks/sweeps/phantom_tuned.yaml): phantom_vit and natural_vit x linear probe / LoRA r=8 /
# MoLRE 4x2 shared A / MoLRE 4x2 separate A, every arm tuned with the same 6 trials on the validation split, then
# 6 seeds each on 1,078 test scans, six epochs per run, through the notebooks; then the answers ->
# benchmarks/results/phantom_tuned.{csv,json} and figures/phantom_tuned/val_curves.*. About 2 h 17 min on 2 idle
# CPU cores, backbone pretraining included (an estimate: measured as 1 h 58 min with 4 trials per arm, then a
# 21-minute rerun adding LR 0.009; docs/explanation/phantom-study.md). Pretrains the two demo backbones once
# (cached). Rerunning continues where it stopped.
phantom-study: $(STAMP)
	$(VENV)/bin/molre demo --sweep notebooks/sweeps/phantom_tuned.yaml
	$(PY) benchmarks/phantom_tuned.py --sweep-dir runs/phantom_tuned

# The untuned study it replaces (phantom_study.yaml: one learning rate, alpha = 2r, 3 seeds) and its scaling
# ablation (phantom_alpha.yaml) -> benchmarks/results/phantom_study*.{csv,json}. ~96 min on 2 CPU cores.
phantom-study-untuned: $(STAMP)
	$(VENV)/bin/molre demo --sweep notebooks/sweeps/phantom_study.yaml
	$(VENV)/bin/molre sweep notebooks/sweeps/phantom_alpha.yaml
	$(PY) benchmarks/phantom_study.py --sweep-dir runs/phantom_study --ablation-dir runs/phantom_alpha

# The documentation site (docs/, mkdocs.yml): the CLI, notebook-parameter and findings reference pages are
# generated at build time from the code (docs/gen_reference.py); the API pages from the docstrings.
DOCS_ENV := DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1
docs: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs serve

docs-build: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict

# The site's figures, drawn by code (docs/assets/*.png; committed): re-run when the phantom changes.
docs-figures: $(STAMP)
	$(PY) docs/figures.py
