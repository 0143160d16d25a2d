# Two commands for a fresh machine: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
OUT ?= out

.PHONY: install demo test bench paper clean

# pip skips what is already installed; torch==2.13.0 is the CPU build on CPU machines here
# (a local wheel) and PyPI's CUDA build on a Linux machine with a GPU.
install:
	@$(PYTHON) -c "import torch, numpy, PIL, tokenizers, tqdm, pytest" 2>/dev/null || \
		$(PYTHON) -m pip install -q -r requirements.txt

test: install
	$(PYTHON) -m pytest

demo: install
	$(PYTHON) train.py --stage lm --preset tiny --out-dir $(OUT)
	$(PYTHON) sample.py --ckpt $(OUT)/lm.pt --prompt "Question: Can you eat an apple? Answer:"

clean:
	rm -rf $(OUT)
