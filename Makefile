# Quick start:  make demo   (set up, synthetic data, train + evaluate four runs at 64x32, print a Table 2 with its seed spread)
#               make test   (set up, run the whole test suite; make test-fast: all but the slow tests)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   := data/synthetic
RUNS   := runs/demo
DEMO_RUNS := erfnet cyclegan quant2

.PHONY: setup demo sweep-demo study semi-study semi-probe mechanism regime test test-fast test-deps slurm-deps lint docs docs-serve clean

setup: $(STAMP)

# torch first, pinned: the CPU wheel of 2.13.0 is on local disk; an unpinned torch would pull CUDA builds.
# The docs extra too: tests/test_docs.py builds the site.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

$(DATA)/leftImg8bit: | $(STAMP)
	$(BIN)/cycleseg make-synthetic $(DATA)

demo: $(STAMP) $(DATA)/leftImg8bit
	@for run in $(DEMO_RUNS); do \
	  $(BIN)/cycleseg train configs/demo/$$run.yaml --data $(DATA) --out $(RUNS)/$$run --overwrite || exit 1; \
	  $(BIN)/cycleseg evaluate $(RUNS)/$$run --data $(DATA) > /dev/null || exit 1; \
	done
	@# the same 2-bit config at a second seed: the table's "seed spread" line says how far two seeds land apart
	$(BIN)/cycleseg train configs/demo/quant2.yaml --data $(DATA) --out $(RUNS)/quant2-seed1 --overwrite train.seed=1
	@$(BIN)/cycleseg evaluate $(RUNS)/quant2-seed1 --data $(DATA) > /dev/null
	@echo
	@$(BIN)/cycleseg table $(addprefix $(RUNS)/,$(DEMO_RUNS)) $(RUNS)/quant2-seed1

# A reduced Table 2 on the synthetic data: 4 of the paper's configs at 128x64 for 4 epochs, 2 seeds each, two runs
# at a time (local launcher), then the report (mean and 95 % interval over the seeds, differences paired by seed).
SWEEP_DEMO_RUNS := plain,nonoise,quant2,gauss_7.38
sweep-demo: $(STAMP) $(DATA)/leftImg8bit
	$(BIN)/cycleseg sweep configs/paper --data $(DATA) --out runs/sweep-demo --only $(SWEEP_DEMO_RUNS) --seeds 2 \
	  --launcher local --jobs 2 \
	  data.height=64 data.width=128 optim.epochs=4 optim.decay_start_epoch=2 optim.lr=1e-3 train.eval_every=1 --report

# The watermark study (docs/study.md): no noise, 2-bit quantization and Gaussian noise at the 2-bit run's SNR,
# 3 seeds each, 2,400 iterations at 64x32 on the toy city with --colour-spread 3; about 100 min on 2 cores.
# Resumable: after an interruption run it again; finished runs and their diagnoses are kept.
STUDY_DATA := data/synthetic-detail
study: $(STAMP)
	@test -d $(STUDY_DATA)/leftImg8bit || $(BIN)/cycleseg make-synthetic $(STUDY_DATA) --size 128x64 --colour-spread 3
	$(BIN)/cycleseg prepare $(STUDY_DATA) --size 64x32
	$(BIN)/cycleseg sweep configs/study --data $(STUDY_DATA) --out runs/study --seeds 3
	@for run in runs/study/*/seed*; do \
	  test -f $$run/diagnose_val_training.json || \
	    $(BIN)/cycleseg diagnose $$run --data $(STUDY_DATA) --along-training || exit 1; \
	  test -f $$run/diagnose_val.json || test $${run##*/} != seed0 || \
	    $(BIN)/cycleseg diagnose $$run --data $(STUDY_DATA) > /dev/null || exit 1; \
	done
	$(BIN)/cycleseg report runs/study --data $(STUDY_DATA)

# The semi-supervised study (docs/semi-supervised.md): a toy city of 80 training images (so that 1/8 of them, 10, is
# too few labels for the plain ERFNet), labelled fractions 1/8 and 1/4, each with the plain ERFNet on the labels, the
# paper's cycle and the anchor's cycle (Mondal et al. 2019), both with and without 2-bit noise, and the plain ERFNet
# on every label (the ceiling); 5 seeds, fp32, 64x32, 600 iterations; two runs at a time, one torch thread each;
# about 2 hours on 2 cores (measured: docs/semi-supervised.md), resumable.
SEMI_DATA := data/synthetic-semi
semi-study: $(STAMP)
	@test -f $(SEMI_DATA)/.complete || { $(BIN)/cycleseg make-synthetic $(SEMI_DATA) --train 80 --val 60 && \
	  touch $(SEMI_DATA)/.complete; }
	$(BIN)/cycleseg prepare $(SEMI_DATA) --size 64x32
	$(BIN)/cycleseg sweep configs/semi-study --data $(SEMI_DATA) --out runs/semi-study --seeds 5 --launcher local --jobs 2
	$(BIN)/cycleseg report runs/semi-study --data $(SEMI_DATA)

# The study's probe (docs/semi-supervised.md, "What the unlabelled images add"): the three cycle models of 1/8 once
# more on their 10 labelled images alone (configs/semi-probe/: optim.unlabelled_batch_size 0, no D_Y), and the
# anchor's cycle of 1/8 without D_Y (loss.adv_y 0), 5 seeds, into the study's folder, so that the report weighs each
# semi-supervised model against the same model without unlabelled images, and without D_Y. After make semi-study
# (run first if needed); 20 runs, about 35 min on 2 cores, resumable.
semi-probe: semi-study
	$(BIN)/cycleseg sweep configs/semi-study configs/semi-probe --data $(SEMI_DATA) --out runs/semi-study --seeds 5 \
	  --launcher local --jobs 2
	$(BIN)/cycleseg report runs/semi-study --data $(SEMI_DATA)

# The mechanism laboratory (docs/mechanism.md): the small stride-1 residual G and F on 32x32 shapes whose colours are
# independent of their class; no noise, Gaussian at 7.38 and 21.02 dB, 2-bit quantization and the plain network,
# fp32, 5 seeds, 1,000 iterations each. First the reward for hiding (cycleseg reward), then the runs, every cycle run
# diagnosed along training (and seed 0 in full, with pictures), then the report. About 1 hour on an idle 2-core CPU (MECH_JOBS runs at a time, 1 thread each).
# Resumable: after an interruption run it again; finished runs and their diagnoses are kept.
MECH_DATA := data/mechanism
MECH_JOBS ?= 2
$(MECH_DATA)/.complete: | $(STAMP)
	$(BIN)/cycleseg make-synthetic $(MECH_DATA) --scene shapes --colour-mode independent --size 32x32 \
	  --train 1000 --val 200 && touch $@

mechanism: $(STAMP) $(MECH_DATA)/.complete
	@mkdir -p runs/mechanism
	$(BIN)/cycleseg reward --data $(MECH_DATA) --size 32x32 | tee runs/mechanism/reward.txt
	$(BIN)/cycleseg sweep configs/mechanism --data $(MECH_DATA) --out runs/mechanism --seeds 5 --launcher local \
	  --jobs $(MECH_JOBS) --threads 1
	@ls -d runs/mechanism/*/seed* | xargs -P $(MECH_JOBS) -I RUN sh -c '\
	  grep -q "kind: plain" RUN/config.yaml && exit 0; \
	  test -f RUN/diagnose_val_training.json || OMP_NUM_THREADS=1 $(BIN)/cycleseg diagnose RUN --data $(MECH_DATA) \
	    --along-training --quiet > /dev/null || exit 255; \
	  test -f RUN/diagnose_val.json || test "$${0##*/}" != seed0 || \
	    OMP_NUM_THREADS=1 $(BIN)/cycleseg diagnose RUN --data $(MECH_DATA) --quiet > /dev/null || exit 255' RUN
	$(BIN)/cycleseg report runs/mechanism --data $(MECH_DATA)

# The quantizer's regime (docs/mechanism.md, "The paper's regime"): the laboratory's data and schedule with the
# scaled 2-bit quantizer (noise.scale rms; identity and clipped estimators), the clipped estimator without the scale,
# Gaussian noise at the scaled arm's measured SNR, no noise and the plain network as paired references, and the
# objective ablation at gamma = 1 (no noise, Gaussian 7.38 dB, scaled 2-bit); fp32, REGIME_SEEDS seeds, two runs at
# a time, one thread each. Then every cycle run diagnosed along training, the 1 to 4-bit SNR table of each no-noise
# run (calibrate --quantizers) and the report. About 1 hour on an idle 2-core CPU; resumable: run it again.
REGIME_SEEDS ?= 5
regime: $(STAMP) $(MECH_DATA)/.complete
	$(BIN)/cycleseg sweep configs/regime --data $(MECH_DATA) --out runs/regime --seeds $(REGIME_SEEDS) \
	  --launcher local --jobs $(MECH_JOBS) --threads 1
	@ls -d runs/regime/*/seed* | xargs -P $(MECH_JOBS) -I RUN sh -c '\
	  grep -q "kind: plain" RUN/config.yaml && exit 0; \
	  test -f RUN/diagnose_val_training.json || OMP_NUM_THREADS=1 $(BIN)/cycleseg diagnose RUN --data $(MECH_DATA) \
	    --along-training --quiet > /dev/null || exit 255' RUN
	@for run in runs/regime/nonoise/seed*; do \
	  test -f $$run/calibrate_val_quantizers.json || \
	    OMP_NUM_THREADS=1 $(BIN)/cycleseg calibrate $$run --data $(MECH_DATA) --quantizers > /dev/null || exit 1; \
	done
	$(BIN)/cycleseg report runs/regime --data $(MECH_DATA)

# Tests run in as many processes as there are cores (pytest-xdist), a file whole in one process; tests/conftest.py
# gives each cores / processes torch threads, and hands out the longest files first.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: $(STAMP) test-deps
	$(PYTEST)

# The Debian packages of the Slurm tests (a one-node cluster) and the browser tests (Chromium), when missing.
# Where they cannot be installed (not root, no apt-get) it says in one line which tests skip and goes on.
# CYCLESEG_NO_SLURM=1 / CYCLESEG_NO_BROWSER=1 leave a group out.
test-deps:
	@tests/install-deps.sh
slurm-deps:
	@tests/install-deps.sh slurm

# The fast tier (under a minute on 2 cores): everything but the tests marked slow.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link, anchor or API reference.
# docs/reference/config.md is generated from src/cycleseg/config.py (tests/test_config_reference.py: never stale).
docs: $(STAMP)
	$(BIN)/python docs/config_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) $(DATA) $(STUDY_DATA) $(SEMI_DATA) $(MECH_DATA) $(RUNS) runs/sweep-demo runs/study runs/semi-study runs/mechanism runs/regime \
	  build site src/*.egg-info
