# Two commands do all the set-up on a fresh machine: `make test` and `make book`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local CPU wheel of torch lies here on the build machines; pip takes it because constraints.txt pins it.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
BOOK_HTML := book/_build/html/index.html

.PHONY: test book lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -c constraints.txt -e ".[test,docs]"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

book: $(STAMP)
	rm -rf book/tutorials && mkdir -p book/tutorials && cp notebooks/*.ipynb book/tutorials/
	$(BIN)/jupyter-book build book -W -n --keep-going
	@echo "The book is at $(CURDIR)/$(BOOK_HTML)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) book/_build book/tutorials .pytest_cache
