# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Keep Prefect (and anything else) from phoning home: there is no internet here.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# Never let Prefect start its slow temporary server behind our back: tests and
# the demo start a real one, and anything that misses it should fail loudly.
export PREFECT_SERVER_EPHEMERAL_ENABLED := false

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) rollout.db demo.db .pytest_cache .hypothesis
