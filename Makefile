# Two commands do all the set-up on a fresh machine: `make test` and `make book`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local CPU wheel of torch lies here on the build machines; pip takes it because constraints.txt pins it.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
BOOK_HTML := book/_build/html/index.html
SCREENSHOTS := book/_build/screenshots
CACHE := book/_build/.jupyter_cache
# The quickstart's last cell writes a feature atlas (csk.pl.atlas) beside itself, into book/tutorials/pbmc_atlas, which
# the book links to. A notebook served from the execution cache does not run, and book/tutorials is made afresh on every
# build, so the atlas of the last run is kept in book/_build/pbmc_atlas (beside the cache it belongs to) and copied into
# the HTML after each build; without a kept atlas the cache is dropped so that the quickstart runs and writes it again.
ATLAS := pbmc_atlas
NEW_ATLAS := book/tutorials/$(ATLAS)
KEPT_ATLAS := book/_build/$(ATLAS)
BOOK_ATLAS := book/_build/html/tutorials/$(ATLAS)
# apt-get needs root; elsewhere it goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test test-latest book book-check lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -c constraints.txt -e ".[test,docs]"
	touch $@

# The browser check of the book runs too once the book has been built (make book); a fresh clone skips it.
test: $(STAMP)
	$(BIN)/python -m pytest
	if [ -f $(BOOK_HTML) ]; then $(MAKE) book-check; fi

# The newest releases of every dependency on Python 3.12, no constraints (torch: what pip takes on this platform):
# the unit tests and doctests, so that a new user's install is tested as well as our pins.
LATEST := .venv-latest
# the first Python 3.12 that runs: pyenv's (whose shim refuses while 3.11 is the global version), else PATH's
LATEST_PYTHON ?= $(shell for p in $(HOME)/.pyenv/versions/3.12*/bin/python3.12 $$(command -v python3.12); do \
	"$$p" -c '' 2>/dev/null && echo "$$p" && break; done)
$(LATEST)/.installed: pyproject.toml
	@test -n "$(LATEST_PYTHON)" || { echo "make test-latest needs Python 3.12 (set LATEST_PYTHON=/path/to/python3.12)"; exit 1; }
	test -x $(LATEST)/bin/python || $(LATEST_PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e ".[test]"
	touch $@

test-latest: $(LATEST)/.installed
	$(LATEST)/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(anndata|mudata|muon|scanpy|decoupler|numpy|pandas|scipy|torch)=='
	$(LATEST)/bin/python -m pytest tests cellsae_kit -o addopts="--import-mode=importlib -ra --doctest-modules"

# The execution cache knows the notebooks, not the package: a changed module re-runs every notebook.
book: $(STAMP)
	if [ -d $(CACHE) ] && [ -n "$$(find cellsae_kit -newer $(CACHE) -name '*.py' -print -quit)" ]; then rm -rf $(CACHE); fi
	if [ ! -f $(KEPT_ATLAS)/index.html ]; then rm -rf $(CACHE); fi
	rm -rf book/tutorials book/_build/html && mkdir -p book/tutorials && cp notebooks/*.ipynb book/tutorials/
	$(BIN)/jupyter-book build book -W -n --keep-going
	if [ -f $(NEW_ATLAS)/index.html ]; then rm -rf $(KEPT_ATLAS) && cp -R $(NEW_ATLAS) $(KEPT_ATLAS); fi
	test -f $(KEPT_ATLAS)/index.html || { echo "The quickstart wrote no $(NEW_ATLAS); see its last cell"; exit 1; }
	cp -R $(KEPT_ATLAS) $(BOOK_ATLAS)
	@echo "The book is at $(CURDIR)/$(BOOK_HTML)"

# Open every page of the built book in headless Chromium (Debian's, never a downloaded one): fails on missing
# images, broken internal links or anchors, notebook cell errors and JavaScript errors; saves screenshots.
# Then open the book's feature atlas from file:// the same way: a gene and a term taken from its data must find their
# features, a click and an address must open a feature's view, with its images and no request off file://.
book-check: $(STAMP)
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	$(BIN)/python scripts/book_check.py book/_build/html --screenshots $(SCREENSHOTS) --chromium "$$(command -v chromium)"
	test -f $(BOOK_ATLAS)/index.html || { echo "The book has no $(BOOK_ATLAS): build it again with make book"; exit 1; }
	$(BIN)/python scripts/atlas_check.py $(BOOK_ATLAS) --screenshots $(SCREENSHOTS) --chromium "$$(command -v chromium)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(LATEST) book/_build book/tutorials .pytest_cache
