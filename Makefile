# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create their virtual environments on first use; the CPU constraint keeps the local torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints/cpu.txt
# The WebUI's own gradio (3.41.2) needs numpy < 2 and pydantic 1, so the UI tests get their own venv.
VENV_GRADIO ?= .venv-gradio
PY_GRADIO := $(VENV_GRADIO)/bin/python
GRADIO_CONSTRAINTS := constraints/gradio341.txt
GRADIO_TESTS := tests/test_webui_script.py tests/test_webui_api.py tests/test_webui_install.py

.PHONY: demo test test-main test-gradio test-integration hints bench clean

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

$(VENV_GRADIO)/.installed: pyproject.toml $(GRADIO_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV_GRADIO)
	$(PY_GRADIO) -m pip install -q -U pip "setuptools>=77" wheel -c $(GRADIO_CONSTRAINTS)
	$(PY_GRADIO) -m pip install -q -c $(GRADIO_CONSTRAINTS) gradio fastapi httpx httpcore torch -e . \
		pytest scipy torchdiffeq
	$(PY_GRADIO) -m pip install -q -c $(GRADIO_CONSTRAINTS) --no-deps k-diffusion==0.1.1.post1
	touch $@

demo: $(VENV)/.installed-base
	$(PY) -m lib_pinning demo

test: test-main test-gradio test-integration

test-main: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 -q $(addprefix --ignore=,$(GRADIO_TESTS)) --ignore=tests/integration

test-gradio: $(VENV_GRADIO)/.installed
	$(PY_GRADIO) -m pytest -q $(GRADIO_TESTS)

# The real WebUIs (tests/integration/harness.py): each WebUI's venv is built once per machine under
# /var/tmp/sd-prompt-pinning (harness.cache_root); without a WebUI tree (../shared/webui/*.tar.gz or $$PINNING_WEBUI_A1111)
# this prints one line and passes, unless PINNING_REQUIRE_WEBUI=1. Runs one server at a time.
test-integration: $(VENV)/.installed-test
	$(PY) -m tests.integration -v -p no:cacheprovider

# Regenerate javascript/prompt_pinning_hints.js from the options model (a test checks it is current).
hints: $(VENV)/.installed-base
	$(PY) -m lib_pinning.webui.hints

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_flip.py
	$(PY) benchmarks/bench_optimizer.py
	$(PY) benchmarks/bench_hyperbatch.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_prompt_parse.py
	$(PY) benchmarks/bench_pinning.py --quick

clean:
	rm -rf $(VENV) $(VENV_GRADIO) outputs
