# cnnlab: two commands.
#   make run   set up, then reproduce the lecture (cnnlab lecture: runs/lecture/index.html and a scoreboard)
#   make test  set up, then check the import contract (import-linter) and run the test suite
# Both are idempotent: the virtual environment in .venv is reused while pyproject.toml is unchanged.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.cnnlab-installed
FMNIST   := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: run test setup data browser clean

run: setup data
	$(BIN)/cnnlab lecture

test: setup data browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package. Installed here when it is missing
# and apt-get can be used; otherwise the exact way to get it is printed (cnnlab also looks in
# $$CNNLAB_DATA_DIR and ~/.cache/cnnlab/fashion-mnist, and `cnnlab data download` fetches it).
data:
	@if [ -n "$$CNNLAB_DATA_DIR" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
		exit 0; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST into $(FMNIST))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST into $(FMNIST))"; \
		sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST not found. Get it with one of:"; \
		echo "  sudo apt-get install dataset-fashion-mnist        (Debian/Ubuntu: files in $(FMNIST))"; \
		echo "  $(BIN)/cnnlab data download                       (needs a network; into ~/.cache/cnnlab/fashion-mnist)"; \
		echo "  export CNNLAB_DATA_DIR=/path/with/the/four/idx/files"; \
	fi

# The viz page test loads index.html in headless Chromium (Debian's chromium package), installed here
# when missing and apt-get can be used; otherwise that one test is skipped with a reason.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		exit 0; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium (headless browser for the viz page test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "Installing Debian's chromium (headless browser for the viz page test)"; \
		sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium not found: the viz page browser test will be skipped (sudo apt-get install chromium)"; \
	fi

clean:
	rm -rf $(VENV) src/*.egg-info .pytest_cache
