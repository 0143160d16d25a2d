# Two commands for a fresh machine: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
OUT ?= out

.PHONY: install demo test bench paper clean examples

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

# Re-make the few-shot example folders from world.py
examples:
	$(PYTHON) sample.py --write-examples examples/

clean:
	rm -rf $(OUT)
