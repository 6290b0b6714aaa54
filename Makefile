# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv on first use; the CPU constraint keeps the local torch build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints/cpu.txt

.PHONY: demo test venv bench clean

$(VENV)/.installed-base: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip "setuptools>=77" wheel -c $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base pyproject.toml
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[test]'
	# k-diffusion is the reference for the sampler tests only; its own dependencies are not needed
	# for k_diffusion.sampling (tests/kdiffusion_reference.py loads that module alone).
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps k-diffusion==0.1.1.post1
	touch $@

demo: $(VENV)/.installed-base
	$(PY) -m lib_pinning demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 -q

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_flip.py
	$(PY) benchmarks/bench_optimizer.py

clean:
	rm -rf $(VENV) outputs
