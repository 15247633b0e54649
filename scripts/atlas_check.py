"""Open a feature atlas of ``csk.pl.atlas`` from ``file://`` in headless Chromium and fail on what a reader would see.

The atlas must work without a server and without the network, so it is opened as a file and every request that
does not stay on ``file://`` is aborted and fails the check. The check fails on

1. a search (``--search WORD=N,M``) whose results lack an expected feature, or that finds nothing; without
   ``--search``, a gene and a term are taken from the atlas's own data (:func:`searches_from_index`): the top gene
   of the most frequent live feature and the commonest best term, each expected to find every live feature that
   lists it;
2. a click on a row of the index that does not open that feature's view;
3. a feature view without its heading, with an image that does not load (``naturalWidth == 0``), or showing
   ``null``, ``undefined`` or ``NaN`` (a missing value written as text);
4. a JavaScript error (an uncaught exception or a console error) or a request that leaves ``file://``.

Screenshots of the index and of one feature's view are saved as PNG. The browser set-up and the report are those of
``scripts/book_check.py``.

Examples
--------
Check an atlas: searching CST3 must find feature 3, and the term Hypoxia must find something::

    python scripts/atlas_check.py atlas/ --search CST3=3 --search Hypoxia --screenshots atlas_shots

Check an atlas with a gene and a term chosen from its data::

    python scripts/atlas_check.py atlas/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from book_check import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, Problem, Report

# Waits for the images of the feature view, then reports each one's size as decoded.
IMAGES_JS = """
async (timeoutMs) => {
  const imgs = Array.from(document.querySelectorAll('#feature-view img'));
  const settled = (img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
  });
  await Promise.race([Promise.all(imgs.map(settled)), new Promise((r) => setTimeout(r, timeoutMs))]);
  return imgs.map((img) => ({src: img.getAttribute('src'), complete: img.complete, width: img.naturalWidth}));
}
"""
# The text nodes of the feature view that are nothing but a missing value written out ("null", "undefined", "NaN").
LEAKED_JS = """
() => {
  const walker = document.createTreeWalker(document.getElementById('feature-view'), NodeFilter.SHOW_TEXT);
  const found = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent.trim();
    if (['null', 'undefined', 'NaN'].includes(text)) found.push(text);
  }
  return found;
}
"""
ROWS_JS = "() => Array.from(document.querySelectorAll('#rows tr'), (tr) => Number(tr.dataset.feature))"


class _AtlasChecker:
    """One browser tab on the atlas, recording errors and requests that leave ``file://``."""

    def __init__(self, browser: object, timeout: float) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(int(timeout * 1000))
        self.context.route("**/*", self._route)
        self.escaped: list[str] = []
        self.js_errors: list[str] = []
        self.tab = self.context.new_page()
        self.tab.on("pageerror", lambda error: self.js_errors.append(f"uncaught {error.name}: {error.message}"))
        self.tab.on("console", self._on_console)

    def _route(self, route: object) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            self.escaped.append(url)
            route.abort("blockedbyclient")

    def _on_console(self, message: object) -> None:
        if message.type == "error":
            self.js_errors.append(f"console.error: {message.text}")

    def search(self, text: str) -> list[int]:
        """Type ``text`` into the search box and return every feature listed (all pages of results)."""
        self.tab.fill("#search", text)
        more = self.tab.locator("#more")
        while more.is_visible():
            more.click()
        return self.tab.evaluate(ROWS_JS)

    def open_feature(self, feature: int) -> list[dict]:
        """Show one feature's view through the address, wait for it, and return its images."""
        self.tab.evaluate("(n) => { location.hash = 'feature=' + n; }", feature)
        self.tab.wait_for_selector(f"#feature-view h1:text-matches('^Feature {feature}(:|$)')")
        return self.tab.evaluate(IMAGES_JS, 10000)


def read_index(folder: Path | str) -> dict:
    """Read the data of an atlas's index page, ``data/index.js`` (``window.ATLAS_INDEX = {...};``).

    Parameters
    ----------
    folder
        The atlas folder.

    Returns
    -------
    The index as a dictionary: ``n_features``, ``columns`` (per-feature lists, text columns coded as positions in
    ``vocabularies``, ``-1`` for none) and ``vocabularies``.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``data/index.js``.
    ValueError
        If the file is not an atlas index.
    """
    path = Path(folder) / "data" / "index.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write the atlas first with cellsae_kit.pl.atlas")
    text = path.read_text(encoding="utf-8").strip()
    prefix = "window.ATLAS_INDEX = "
    if not (text.startswith(prefix) and text.endswith(";")):
        raise ValueError(f"{path} does not start with {prefix!r}; write the atlas again with cellsae_kit.pl.atlas")
    return json.loads(text[len(prefix) : -1])


def searches_from_index(index: Mapping) -> dict[str, list[int]]:
    """Choose a gene and a term to search for from an atlas's own data, with the features each must find.

    The gene is the first listed gene of the most frequent live feature, and must find every live feature among
    whose listed genes it is; the term is the best term shared by the most live features, and must find them all.
    A search matches text, so it may find more features (``CD3`` also finds ``CD3D``); those are not counted.

    Parameters
    ----------
    index
        The index, as :func:`read_index` returns it.

    Returns
    -------
    Search texts and the features each must find: nothing for an atlas without genes or terms, or whose features
    are all dead.
    """
    columns, vocab = index["columns"], index["vocabularies"]
    n = int(index["n_features"])
    dead = columns.get("dead", [0] * n)
    live = [f for f in range(n) if not dead[f]]
    searches: dict[str, list[int]] = {}
    if "genes" in columns:
        listed = {f: [vocab["genes"][g] for g in columns["genes"][f]] for f in live}
        frequency = columns.get("frequency", [0] * n)
        with_genes = [f for f in live if listed[f]]
        if with_genes:
            first = max(with_genes, key=lambda f: (frequency[f] or 0, -f))
            gene = listed[first][0]
            searches[gene] = [f for f in live if gene in listed[f]]
    if "best_term" in columns:
        terms = {f: vocab["best_term"][columns["best_term"][f]] for f in live if columns["best_term"][f] >= 0}
        if terms:
            counts = {t: list(terms.values()).count(t) for t in set(terms.values())}
            term = min(counts, key=lambda t: (-counts[t], t))
            searches[term] = [f for f, t in terms.items() if t == term]
    return searches


def _image_problems(page: str, images: list[dict]) -> list[Problem]:
    found = []
    for img in images:
        if not img["complete"] or img["width"] == 0:
            found.append(Problem(page, "missing image", f"{img['src']} (naturalWidth {img['width']})"))
    return found


def check_atlas(
    folder: Path | str,
    searches: Mapping[str, Iterable[int]] | None = None,
    screenshots: Path | str | None = None,
    *,
    features: Iterable[int] | None = None,
    chromium: str = CHROMIUM,
    timeout: float = 30.0,
) -> Report:
    """Check an atlas folder in headless Chromium, opened from ``file://``.

    Parameters
    ----------
    folder
        The atlas, the folder ``csk.pl.atlas`` wrote (with ``index.html``).
    searches
        Search texts and the features each must list (an empty list: at least one feature); ``None`` searches for
        the gene and the term of :func:`searches_from_index`, ``{}`` for nothing.
    screenshots
        Folder for PNG screenshots of the index (``atlas_index.png``) and of the first feature opened
        (``atlas_feature.png``); ``None`` takes none.
    features
        Features whose view is opened and checked (default: the first 20); the first one is also opened by a
        click on its row of the index.
    chromium
        The Chromium binary to drive.
    timeout
        Seconds allowed for each step.

    Returns
    -------
    What was found, as :class:`book_check.Report`; ``pages`` lists ``index`` and ``feature=N`` for each view.

    Raises
    ------
    FileNotFoundError
        If ``folder`` has no ``index.html`` or ``chromium`` does not exist.
    """
    from playwright.sync_api import sync_playwright

    folder = Path(folder).resolve()
    index = folder / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} does not exist; write the atlas first with cellsae_kit.pl.atlas")
    if not Path(chromium).exists():
        raise FileNotFoundError(f"{chromium} not found; install it with: apt-get install -y chromium")
    start = time.perf_counter()
    report = Report(pages=["index"])
    if searches is None:
        searches = searches_from_index(read_index(folder))
    n_features = len(list((folder / "features").glob("*.js")))
    features = list(range(min(20, n_features)) if features is None else features)
    shots = None if screenshots is None else Path(screenshots)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        checker = _AtlasChecker(browser, timeout)
        try:
            checker.tab.goto(index.as_uri(), wait_until="load")
            checker.tab.wait_for_selector("#rows tr")
            for text, expected in searches.items():
                found = checker.search(text)
                expected = set(expected)
                if not found:
                    report.problems.append(Problem("index", "search", f"{text!r} finds no feature"))
                elif not expected <= set(found):
                    missing = sorted(expected - set(found))
                    report.problems.append(Problem("index", "search", f"{text!r} does not find features {missing}"))
            checker.search("")
            checker.tab.evaluate("() => window.scrollTo(0, 0)")  # "Show more" scrolled down
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                checker.tab.screenshot(path=str(shots / "atlas_index.png"), full_page=False)
                report.screenshots.append(shots / "atlas_index.png")
            if features:
                first = features[0]
                # Its row may be beyond the first page of the list, or hidden as dead.
                if checker.tab.locator("#hide-dead").is_visible():
                    checker.tab.locator("#hide-dead").set_checked(False)
                checker.search(str(first))
                link = checker.tab.locator(f"#rows tr[data-feature='{first}'] td:nth-child(2)")
                link.click()
                checker.tab.wait_for_selector(f"#feature-view h1:text-matches('^Feature {first}(:|$)')")
                if not checker.tab.url.endswith(f"#feature={first}"):
                    report.problems.append(Problem("index", "click", f"row {first} opened {checker.tab.url}"))
            for i, feature in enumerate(features):
                page = f"feature={feature}"
                report.pages.append(page)
                try:
                    images = checker.open_feature(feature)
                except Exception as error:  # noqa: BLE001 - report the view and go on with the others
                    report.problems.append(Problem(page, "page", f"does not open: {str(error).splitlines()[0]}"))
                    continue
                report.problems += _image_problems(page, images)
                for word in sorted(set(checker.tab.evaluate(LEAKED_JS))):
                    report.problems.append(Problem(page, "text", f"shows {word!r} (a missing value written as text)"))
                if i == 0 and shots is not None:
                    checker.tab.screenshot(path=str(shots / "atlas_feature.png"), full_page=True)
                    report.screenshots.append(shots / "atlas_feature.png")
        finally:
            checker.context.close()
            browser.close()
    report.problems += [Problem("atlas", "JavaScript error", error) for error in checker.js_errors]
    report.problems += [Problem("atlas", "network", f"a request left file://: {url}") for url in checker.escaped]
    report.external = {url: {"atlas"} for url in checker.escaped}
    report.problems = sorted(set(report.problems))
    report.seconds = time.perf_counter() - start
    return report


def _search_arg(text: str) -> tuple[str, list[int]]:
    word, _, numbers = text.partition("=")
    return word, [int(n) for n in numbers.split(",") if n]


def main(argv: list[str] | None = None) -> int:
    """Run the check from the command line.

    Parameters
    ----------
    argv
        The arguments, without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    0 when the atlas passes, 1 when a problem was found, 2 when the check could not run.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the atlas folder, with index.html")
    parser.add_argument(
        "--search",
        action="append",
        type=_search_arg,
        metavar="WORD[=N,M]",
        help="search and expect (default: a gene and a term chosen from the atlas's data)",
    )
    parser.add_argument("--screenshots", type=Path, help="folder for PNG screenshots")
    parser.add_argument("--feature", action="append", type=int, help="feature view to check (default: 0-19)")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium binary (default: {CHROMIUM})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per step (default: 30)")
    args = parser.parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("atlas-check: the Python package playwright is missing; pip install playwright", file=sys.stderr)
        return 2
    try:
        searches = searches_from_index(read_index(args.folder)) if args.search is None else dict(args.search)
        for text, expected in searches.items():
            print(f"search: {text!r} must find features {sorted(expected) if expected else 'any'}")
        report = check_atlas(
            args.folder,
            searches,
            args.screenshots,
            features=args.feature,
            chromium=args.chromium,
            timeout=args.timeout,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"atlas-check: {error}", file=sys.stderr)
        return 2
    for shot in report.screenshots:
        print(f"screenshot: {shot}")
    for problem in report.problems:
        print(f"FAIL {problem}")
    verdict = "passed" if report.ok else f"FAILED with {len(report.problems)} problem(s)"
    print(f"atlas-check: {len(report.pages)} views {verdict} in {report.seconds:.1f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
