# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment it needs: torch (CPU build, pinned) first, then the rest,
# with versions fixed by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo
# SAELens for the export tests (tests/test_saelens.py): without its dependencies (pip would pull a
# CUDA torch and its training stack), plus those it imports when loading an SAE; pinned in
# constraints.txt. CPU only.
SAELENS := sae-lens transformer-lens jaxtyping datasets multiprocess pyarrow dill xxhash \
           python-dotenv simple-parsing tenacity better-abc

.PHONY: demo test venv chromium clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -c constraints.txt $(SAELENS) || \
	  echo "sae-lens not installed: the SAELens tests will be skipped"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/pipeline.py --config configs/demo.yaml --out $(OUT)

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

# The feature-browser test drives Debian's chromium (headless); installed here when missing and
# this is a Debian machine we may install on, otherwise that test is skipped with a reason.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "chromium not installed: the feature-browser test will be skipped"


clean:
	rm -rf $(VENV) out
