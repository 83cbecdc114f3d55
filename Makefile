# medmonai: two commands for a fresh machine with Python 3.11 — `make demo` and `make test`.
# Both create ./.venv, install the CPU build of PyTorch first (so nothing pulls a multi-GB CUDA build),
# then install medmonai in editable mode.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The pinned CPU wheel. Outside the project machines add the CPU index, e.g.
#   make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# the demo writes outside the checkout: $MEDMONAI_HOME/demo, by default ~/.medmonai/demo
DEMO_OUT ?= $(if $(MEDMONAI_HOME),$(MEDMONAI_HOME),$(HOME)/.medmonai)/demo

.PHONY: install demo test test-quick lint clean peer

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/medmonai demo --out $(DEMO_OUT)

lint: install
	$(BIN)/ruff check medmonai tests benchmarks
	$(BIN)/ruff format --check medmonai tests benchmarks

test: install lint
	$(BIN)/python -m pytest -q

# the inner loop: everything but the tests marked slow (multi-process, several training runs), a few minutes
test-quick: install
	$(BIN)/python -m pytest -q -m "not slow"

# benchmark-only: nnU-Net v2 in its own venv for benchmarks/nnunet_peer.py (see benchmarks/requirements-peer.txt)
PEER_VENV ?= .venv-peer
NNUNET_SPEC ?= nnunetv2==2.8.1 dynamic_network_architectures==0.4.4
peer:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PEER_VENV)/bin/python -m pip install --quiet --no-deps $(NNUNET_SPEC)
	$(PEER_VENV)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) -r benchmarks/requirements-peer.txt
	$(PEER_VENV)/bin/python -c "import nnunetv2.run.run_training, torch; print('nnunetv2 ready, torch', torch.__version__)"

clean:
	rm -rf $(VENV) $(PEER_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache *.egg-info
