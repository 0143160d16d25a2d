# Two commands for a fresh machine: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
OUT ?= out

.PHONY: install demo test bench paper lmblock lmblock-prefix clean examples

# pip skips what is already installed; torch==2.13.0 is the CPU build on CPU machines here
# (a local wheel) and PyPI's CUDA build on a Linux machine with a GPU.
install:
	@$(PYTHON) -c "import torch, numpy, PIL, tokenizers, tqdm, pytest" 2>/dev/null || \
		$(PYTHON) -m pip install -q -r requirements.txt

test: install
	$(PYTHON) -m pytest

# The whole pipeline on the embedded default, tiny preset: text pretraining, the visual prefix
# with the LM frozen, then few-shot prompts of images and text (examples/) and a caption sheet.
demo: install
	$(PYTHON) train.py --stage lm --preset tiny --out-dir $(OUT)
	$(PYTHON) sample.py --ckpt $(OUT)/lm.pt --prompt "a big red apple. Question: Can you eat this? Answer:"
	$(PYTHON) train.py --stage prefix --preset tiny --out-dir $(OUT)
	$(PYTHON) sample.py --ckpt $(OUT)/prefix.pt --shots examples/
	$(PYTHON) sample.py --ckpt $(OUT)/prefix.pt --caption-sheet $(OUT)/captions.png

# The paper's experiments re-made on the world (eval.py), by the protocol of eval.py's docstring:
# for each seed in SEEDS the whole pipeline (an LM, then stage prefix for Frozen and for the
# ablations that carry the paper's claims: train-blind, fine-tuned LM, LM from scratch), the
# prefix-length ablation with the first seed only; then every table on the TEST episodes, each
# cell the mean over the seeds with a t-interval across them, into $(PAPER)/results.md (+ .json,
# + .png). Each step resumes from its checkpoint, so running it again continues where it stopped.
# PRESET=tiny: 2 CPU cores, about 1 h 52 min on an AMD EPYC (Zen 4), its results in docs/paper/;
# PRESET=small: one GPU (use another OUT for it).
PRESET ?= tiny
PAPER ?= $(OUT)/paper
SEEDS ?= 0 1 2
FIRST_SEED = $(firstword $(SEEDS))
# per seed and cell: 3 seeds x 70 = 210 test episodes a cell
PAPER_EPISODES ?= 70
# the prefix-length ablation trains the paper's lengths that the preset does not use
# (tiny: n = 4, measured better on the world; small: the paper's n = 2)
ifeq ($(PRESET),tiny)
PAPER_N ?= 1 2
endif
PAPER_N ?= 1 4
PAPER_LM_FLAGS ?=
PAPER_PREFIX_FLAGS ?=
# tiny: float32, as docs/paper/ was trained (--dtype auto keeps stage lm in float32 but may take
# bf16 autocast for stage prefix on a CPU with bf16 arithmetic: faster, and not the committed
# figures; PAPER_DTYPE=auto for that); small: auto
ifeq ($(PRESET),tiny)
PAPER_DTYPE ?= float32
endif
PAPER_DTYPE ?= auto
LM_RUN = $(PYTHON) train.py --stage lm --preset $(PRESET) --resume --dtype $(PAPER_DTYPE) $(PAPER_LM_FLAGS)
PREFIX_RUN = $(PYTHON) train.py --stage prefix --preset $(PRESET) --resume --dtype $(PAPER_DTYPE) $(PAPER_PREFIX_FLAGS)
ABLATIONS = frozen train-blind finetune-lm lm-scratch
FLAGS_frozen =
FLAGS_train-blind = --blind
FLAGS_finetune-lm = --finetune-lm
FLAGS_lm-scratch = --lm-init scratch
seeds_of = $(foreach s,$(SEEDS),$(1)=$(PAPER)/seed$(s)/$(1)/prefix.pt$(2))

paper: install
	$(foreach s,$(SEEDS), \
		$(LM_RUN) --seed $(s) --out-dir $(PAPER)/seed$(s)/lm && \
		$(foreach a,$(ABLATIONS),$(PREFIX_RUN) --seed $(s) --lm-ckpt $(PAPER)/seed$(s)/lm/lm.pt \
			--out-dir $(PAPER)/seed$(s)/$(a) $(FLAGS_$(a)) &&) true &&) true
	$(foreach n,$(PAPER_N),$(PREFIX_RUN) --seed $(FIRST_SEED) --lm-ckpt $(PAPER)/seed$(FIRST_SEED)/lm/lm.pt \
		--out-dir $(PAPER)/seed$(FIRST_SEED)/n$(n) --n-prefix $(n) &&) true
	$(PYTHON) eval.py --split test --episodes $(PAPER_EPISODES) --ckpt $(call seeds_of,frozen) \
		--compare $(foreach s,$(SEEDS),blind=$(PAPER)/seed$(s)/frozen/prefix.pt:blind) \
		$(call seeds_of,train-blind) $(call seeds_of,finetune-lm) $(call seeds_of,lm-scratch) \
		$(foreach n,$(PAPER_N),n$(n)=$(PAPER)/seed$(FIRST_SEED)/n$(n)/prefix.pt) \
		--md $(PAPER)/results.md --json $(PAPER)/results.json --png $(PAPER)/results.png

# The LM-block comparison (Pang et al. 2024) on the world's kinds, lmblock.py: NF-ResNet alone, +
# the LM's last block frozen, + a trainable MLP of its size, + the block fine-tuned, + a random
# block; each with the seeds in LMB_SEEDS (one table row per variant: the mean over its seeds and
# a t-interval across them). 24 min 45 s on a 2-core AMD EPYC (Zen 4), its table in docs/lmblock/.
# Needs a stage-lm checkpoint: LM=out/lm.pt after `make demo`, the default after `make paper`.
LM ?= $(PAPER)/seed$(FIRST_SEED)/lm/lm.pt
LMB = $(OUT)/lmblock
LMB_SEEDS ?= 0 1 2
LMBLOCK = $(PYTHON) lmblock.py train --preset $(PRESET) --lm-ckpt $(LM) --resume

lmblock: install
	$(foreach s,$(LMB_SEEDS), \
		$(LMBLOCK) --seed $(s) --out-dir $(LMB)/seed$(s)/none --lm-block none && \
		$(LMBLOCK) --seed $(s) --out-dir $(LMB)/seed$(s)/frozen --lm-block last && \
		$(LMBLOCK) --seed $(s) --out-dir $(LMB)/seed$(s)/mlp --lm-block last --lm-block-mode mlp && \
		$(LMBLOCK) --seed $(s) --out-dir $(LMB)/seed$(s)/finetune --lm-block last --lm-block-mode finetune && \
		$(LMBLOCK) --seed $(s) --out-dir $(LMB)/seed$(s)/random --lm-block last --lm-block-mode random &&) true
	$(PYTHON) lmblock.py table --md $(LMB)/results.md \
		$(foreach s,$(LMB_SEEDS),none=$(LMB)/seed$(s)/none/classify.pt) \
		$(foreach s,$(LMB_SEEDS),frozen-block=$(LMB)/seed$(s)/frozen/classify.pt) \
		$(foreach s,$(LMB_SEEDS),mlp=$(LMB)/seed$(s)/mlp/classify.pt) \
		$(foreach s,$(LMB_SEEDS),finetuned-block=$(LMB)/seed$(s)/finetune/classify.pt) \
		$(foreach s,$(LMB_SEEDS),random-block=$(LMB)/seed$(s)/random/classify.pt)

# The same five encoders as Frozen's vision side: stage prefix with each, then the comparison
# table (caption kind, VQA, OKVQA, binding, Fast-VQA, prefix separation) into $(LMB)/frozen.md.
LMPREFIX = $(PYTHON) train.py --stage prefix --preset $(PRESET) --lm-ckpt $(LM) --resume

lmblock-prefix: install
	$(LMPREFIX) --out-dir $(LMB)/prefix-none --lm-block none
	$(LMPREFIX) --out-dir $(LMB)/prefix-frozen --lm-block last
	$(LMPREFIX) --out-dir $(LMB)/prefix-mlp --lm-block last --lm-block-mode mlp
	$(LMPREFIX) --out-dir $(LMB)/prefix-finetune --lm-block last --lm-block-mode finetune
	$(LMPREFIX) --out-dir $(LMB)/prefix-random --lm-block last --lm-block-mode random
	$(PYTHON) eval.py --episodes $(PAPER_EPISODES) --ckpt none=$(LMB)/prefix-none/prefix.pt \
		--compare frozen-block=$(LMB)/prefix-frozen/prefix.pt mlp=$(LMB)/prefix-mlp/prefix.pt \
		finetuned-block=$(LMB)/prefix-finetune/prefix.pt random-block=$(LMB)/prefix-random/prefix.pt \
		--md $(LMB)/frozen.md --json $(LMB)/frozen.json

bench: install
	$(PYTHON) bench.py

# Re-make the few-shot example folders from the world's episodes (world/episodes.py)
examples:
	$(PYTHON) sample.py --write-examples examples/

clean:
	rm -rf $(OUT)
