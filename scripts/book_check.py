"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

The site is served from ``127.0.0.1`` on a free port (never ``file://``) and every HTML page is opened in Debian's
Chromium through Playwright. A page fails on

1. a missing image: an ``<img>`` whose request failed or that did not decode (``naturalWidth == 0``), and any other
   local resource (stylesheet, script, font) that failed to load;
2. a broken internal link: an ``href`` to a local file that does not exist, or to an ``#anchor`` that is missing on
   the target page (external ``http(s)`` links, ``mailto:`` and ``javascript:`` are not followed);
3. a notebook cell error: a myst-nb error output (``div.output.traceback``), a stderr output
   (``div.output.stderr``) whose text contains ``Traceback`` or ``Error``, or a docutils system message;
4. a JavaScript error: an uncaught exception or a console message of type ``error``;
5. on the workshop pages (``workshop*.html``, ``handout.html``): a dropdown (``<details>``, as sphinx-design's
   ``{dropdown}`` renders) that does not open, or shows no content, when its summary is clicked, and an opened
   dropdown whose text shows a Python traceback. Every dropdown is clicked, so the screenshots of these pages
   show the solutions expanded.

Requests to other hosts (fonts or scripts a theme fetches from the internet) are blocked, so that the check is the
same offline and online; they are reported as notes and do not fail the check. Full-page screenshots of chosen pages
are saved as PNG.

Examples
--------
Check the book built by ``make book`` and save the screenshots::

    python scripts/book_check.py book/_build/html --screenshots book/_build/screenshots
"""

from __future__ import annotations

import argparse
import http.server
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOT_PAGES = (
    "intro.html",
    "tutorials/quickstart.html",
    "workshop.html",
    "workshop_morning.html",
    "workshop_afternoon.html",
    "handout.html",
)
# Pages whose dropdowns are clicked open and checked (fnmatch patterns on the page's path).
DROPDOWN_PAGES = ("workshop*.html", "handout.html")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# Sphinx copies files into these folders; the HTML files in them (theme macros) are not pages.
NOT_PAGES = ("_static", "_sources", "_images", "_downloads")
VIEWPORT = {"width": 1280, "height": 900}
STDERR_ERROR = re.compile(r"Traceback|Error")
META_REFRESH = re.compile(
    r"""<meta[^>]*http-equiv=["']?refresh["']?[^>]*content=["'][^"']*url=([^"'>\s]+)""", re.IGNORECASE
)
IGNORED_SCHEMES = ("mailto", "javascript", "tel", "data", "blob", "about")

# Runs in the page once it has loaded: lets lazy images load, waits for every image to settle, then collects what
# the checks need. Each cell is identified by its 1-based position among the page's cells.
COLLECT_JS = """
async (timeoutMs) => {
  const imgs = Array.from(document.images);
  for (const img of imgs) { if (img.loading === 'lazy') img.loading = 'eager'; }
  const settled = (img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
  });
  await Promise.race([Promise.all(imgs.map(settled)), new Promise((r) => setTimeout(r, timeoutMs))]);
  const cells = Array.from(document.querySelectorAll('div.cell'));
  const where = (el) => {
    const cell = el.closest('div.cell');
    return cell ? 'cell ' + (cells.indexOf(cell) + 1) : 'output';
  };
  const outputs = (selector) => Array.from(document.querySelectorAll(selector)).map(
    (el) => ({where: where(el), text: el.innerText || el.textContent || ''}));
  return {
    images: imgs.map((img) => ({
      attr: img.getAttribute('src') || '', url: img.currentSrc || img.src, complete: img.complete,
      width: img.naturalWidth})),
    links: Array.from(document.querySelectorAll('a[href]')).map((a) => ({
      attr: a.getAttribute('href'), url: a.href, text: (a.textContent || '').trim().slice(0, 60)})),
    ids: Array.from(document.querySelectorAll('[id]'), (el) => el.id).concat(
      Array.from(document.querySelectorAll('a[name]'), (a) => a.name)),
    tracebacks: outputs('div.output.traceback'),
    stderr: outputs('div.output.stderr'),
    messages: outputs('.system-message'),
  };
}
"""

# Runs on one dropdown's <summary> after it was clicked: is its <details> open, and is its content shown?
DROPDOWN_STATE_JS = """
(summary) => {
  const details = summary.closest('details');
  const body = details ? Array.from(details.children).filter((el) => el !== summary) : [];
  const height = body.reduce((sum, el) => sum + el.getBoundingClientRect().height, 0);
  return {open: details ? details.open : false, height: height,
          title: (summary.innerText || '').trim().slice(0, 60),
          text: body.map((el) => el.innerText || '').join('\\n')};
}
"""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing a reader would see broken.

    Parameters
    ----------
    page
        The page's path relative to the site root, such as ``tutorials/quickstart.html``.
    kind
        ``missing image``, ``missing resource``, ``broken link``, ``missing anchor``, ``cell error``,
        ``JavaScript error``, ``dropdown`` or ``page``.
    detail
        What is wrong, naming the image, link, cell or message.
    """

    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass
class Report:
    """What a check of a site found.

    Parameters
    ----------
    pages
        The pages checked, relative to the site root.
    problems
        The problems, sorted by page; the check passes when there are none.
    external
        Blocked requests to other hosts, each URL with the pages that asked for it.
    screenshots
        The PNG files written.
    seconds
        Wall-clock time of the check.
    """

    pages: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    external: dict[str, set[str]] = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def for_page(self, page: str) -> list[Problem]:
        """Return the problems found on one page.

        Parameters
        ----------
        page
            The page's path relative to the site root.

        Returns
        -------
        The problems whose page is ``page``.
        """
        return [p for p in self.problems if p.page == page]


@dataclass
class _Visit:
    """What was seen on one page: collected DOM facts plus the events recorded while it loaded."""

    data: dict = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # local URL -> why it failed
    js_errors: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files without logging every request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    """A threaded server that ignores connections the browser drops."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve a folder over HTTP on 127.0.0.1 in a background thread.

    Parameters
    ----------
    site
        The folder to serve.

    Yields
    ------
    The base URL, such as ``http://127.0.0.1:41234/``, on a free port.
    """
    server = _QuietServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="book-check-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def find_pages(site: Path) -> list[str]:
    """List the HTML pages of a built site.

    Parameters
    ----------
    site
        The root of the built site, such as ``book/_build/html``.

    Returns
    -------
    The pages' paths relative to ``site``, in POSIX form and sorted; files under ``_static``, ``_sources``,
    ``_images`` and ``_downloads`` are left out, and so is the ``index.html`` of a feature atlas of
    ``cellsae_kit.pl.atlas`` (beside ``atlas.js`` and ``data/index.js``): its ``#feature=N`` links are no anchors,
    and ``scripts/atlas_check.py`` checks it. Links from the book to an atlas are still checked.
    """
    pages = []
    for path in site.rglob("*.html"):
        rel = path.relative_to(site)
        if rel.parts[0] not in NOT_PAGES and not is_atlas(path.parent):
            pages.append(rel.as_posix())
    return sorted(pages)


def is_atlas(folder: Path) -> bool:
    """Tell whether a folder holds a feature atlas written by ``cellsae_kit.pl.atlas``.

    Parameters
    ----------
    folder
        Any folder.

    Returns
    -------
    Whether it has the atlas's ``index.html``, ``atlas.js`` and ``data/index.js``.
    """
    return all((folder / name).is_file() for name in ("index.html", "atlas.js", "data/index.js"))


def _redirect_target(html: str) -> str | None:
    match = META_REFRESH.search(html)
    return match.group(1) if match else None


def _ids_on_disk(path: Path) -> set[str]:
    # For link targets that are not among the visited pages; the browser's view is used for the others.
    text = path.read_text(encoding="utf-8", errors="replace")
    return set(re.findall(r"""\b(?:id|name)=["']([^"']+)["']""", text))


class _Checker:
    """Visit pages with one browser and turn what was seen into problems."""

    def __init__(self, site: Path, base: str, browser: object, timeout: float) -> None:
        self.site = site
        self.base = base
        self.origin = urlsplit(base).netloc
        self.timeout_ms = int(timeout * 1000)
        # One context keeps the HTTP cache between pages (the theme's assets load once); storage is cleared before
        # each page's scripts run, so that every page is checked as a first-time visitor would see it.
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(self.timeout_ms)
        self.context.add_init_script("try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
        # Only requests that are not to the local server are intercepted (the pattern is matched inside the browser).
        self.context.route(re.compile("^(?!" + re.escape(base) + ")"), self._route)
        self.external: dict[str, set[str]] = {}
        self.current = ""
        self.ids: dict[str, set[str]] = {}
        self.tab = None
        self.visiting: _Visit | None = None

    def _is_local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and parts.netloc == self.origin

    def _short(self, url: str) -> str:
        # A local URL as a path in the site, without the server's port or cache-busting query.
        return unquote(urlsplit(url).path).lstrip("/") if self._is_local(url) else url

    def _route(self, route: object) -> None:
        url = route.request.url
        if self._is_local(url) or urlsplit(url).scheme not in ("http", "https", "ws", "wss"):
            route.continue_()
        else:
            self.external.setdefault(url, set()).add(self.current)
            route.abort("blockedbyclient")

    def _open_tab(self) -> object:
        # One tab for all pages: a navigation within the site keeps its renderer process, which is much faster than
        # a new tab per page. Events go to the visit in progress; between visits they are dropped.
        tab = self.context.new_page()
        tab.on("requestfailed", self._on_failed)
        tab.on("response", self._on_response)
        tab.on("console", self._on_console)
        tab.on("pageerror", self._on_pageerror)
        return tab

    def _on_failed(self, request: object) -> None:
        if self.visiting is not None and self._is_local(request.url):
            self.visiting.failed[request.url] = request.failure or "request failed"

    def _on_response(self, response: object) -> None:
        if self.visiting is not None and self._is_local(response.url) and response.status >= 400:
            self.visiting.failed[response.url] = f"HTTP {response.status}"

    def _on_console(self, message: object) -> None:
        # Failed loads are reported from the requests themselves (local: problem, external: note).
        if self.visiting is None or message.type != "error" or message.text.startswith("Failed to load resource"):
            return
        source = (message.location or {}).get("url", "")
        where = f" (from {self._short(source)})" if source else ""
        self.visiting.js_errors.append(f"console.error: {message.text}{where}")

    def _on_pageerror(self, error: object) -> None:
        if self.visiting is not None:
            self.visiting.js_errors.append(f"uncaught {error.name}: {error.message}")

    def visit(self, page: str, screenshot: Path | None = None) -> _Visit:
        """Open one page, wait until it has settled, and record what it shows."""
        self.current = page
        self.visiting = visit = _Visit()
        if self.tab is None:
            self.tab = self._open_tab()
        try:
            self.tab.goto(self.base + page, wait_until="load")
            try:
                self.tab.wait_for_load_state("networkidle", timeout=min(self.timeout_ms, 5000))
            except Exception:  # noqa: BLE001 - a page that keeps polling is checked as it is
                pass
            visit.data = self.tab.evaluate(COLLECT_JS, min(self.timeout_ms, 10000))
            if any(fnmatch(page, pattern) for pattern in DROPDOWN_PAGES):
                visit.data["dropdowns"] = self._open_dropdowns()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                self.tab.screenshot(path=str(screenshot), full_page=True)
        except Exception:
            self.tab.close()  # start the next page afresh
            self.tab = None
            raise
        finally:
            self.visiting = None
        return visit

    def _open_dropdowns(self) -> list[dict]:
        """Click every dropdown's summary on the open page; record whether it opened and what it shows."""
        states = []
        summaries = self.tab.locator("details.sd-dropdown > summary")  # the theme's sidebar uses <details> too
        for i in range(summaries.count()):
            summary = summaries.nth(i)
            was_open = summary.evaluate("(el) => el.closest('details').open")
            try:
                summary.scroll_into_view_if_needed()
                summary.click()
                if was_open:  # a dropdown that starts open: the click closed it, a second one opens it again
                    summary.click()
                self.tab.wait_for_timeout(50)  # let an opening animation start
                state = summary.evaluate(DROPDOWN_STATE_JS)
            except Exception as error:  # noqa: BLE001 - a dropdown that cannot be clicked is a problem on the page
                state = {"open": False, "height": 0, "title": f"number {i + 1}", "text": "", "error": str(error)}
            state["index"] = i + 1
            states.append(state)
        return states

    def close(self) -> None:
        """Close the browser context."""
        self.context.close()

    def local_target(self, url: str) -> tuple[str, Path]:
        """Map a local URL to its path relative to the site and the file that serves it."""
        rel = unquote(urlsplit(url).path).lstrip("/")
        path = self.site / rel
        if rel == "" or path.is_dir():
            path = path / "index.html"
            rel = path.relative_to(self.site).as_posix()
        return rel, path

    def problems(self, page: str, visit: _Visit) -> list[Problem]:
        """Turn what was seen on a page into problems (links are checked separately, after every visit)."""
        found = []
        images = visit.data.get("images", [])
        image_urls = set()
        for img in images:
            url = img["url"]
            if not (self._is_local(url) or url.startswith("data:")):
                continue  # external images are blocked and reported as notes
            image_urls.add(url)
            name = img["attr"] if not img["attr"].startswith("data:") else "data: URI"
            if url in visit.failed:
                found.append(Problem(page, "missing image", f"{name} ({visit.failed[url]})"))
            elif not img["complete"]:
                found.append(Problem(page, "missing image", f"{name} (still loading after the timeout)"))
            elif img["width"] == 0:
                found.append(Problem(page, "missing image", f"{name} (loaded but does not decode: naturalWidth 0)"))
        for url, why in visit.failed.items():
            path = urlsplit(url).path
            if url not in image_urls and path != "/favicon.ico":
                found.append(Problem(page, "missing resource", f"{unquote(path)} ({why})"))
        for out in visit.data.get("tracebacks", []):
            found.append(Problem(page, "cell error", f"{out['where']} shows an error: {_last_line(out['text'])}"))
        for out in visit.data.get("stderr", []):
            if STDERR_ERROR.search(out["text"]):
                found.append(
                    Problem(page, "cell error", f"{out['where']} writes to stderr: {_error_line(out['text'])}")
                )
        for out in visit.data.get("messages", []):
            found.append(Problem(page, "cell error", f"docutils system message: {_first_line(out['text'])}"))
        for error in visit.js_errors:
            found.append(Problem(page, "JavaScript error", error))
        for state in visit.data.get("dropdowns", []):
            name = f"dropdown {state['index']} ({state['title']!r})"
            if state.get("error"):
                found.append(Problem(page, "dropdown", f"{name} cannot be clicked: {_first_line(state['error'])}"))
            elif not state["open"]:
                found.append(Problem(page, "dropdown", f"{name} does not open when clicked"))
            elif state["height"] <= 0:
                found.append(Problem(page, "dropdown", f"{name} opens but shows no content"))
            elif TRACEBACK.search(state["text"]):
                found.append(Problem(page, "cell error", f"{name} shows a traceback: {_error_line(state['text'])}"))
        return found

    def link_problems(self, page: str, links: Iterable[dict]) -> list[Problem]:
        """Check a page's links to local files and anchors."""
        found = []
        for link in links:
            url, attr = link["url"], link["attr"]
            scheme = urlsplit(url).scheme
            if scheme in IGNORED_SCHEMES or not self._is_local(url):
                continue
            label = f"href={attr!r}" + (f" ({link['text']!r})" if link.get("text") else "")
            rel, path = self.local_target(url)
            if not path.is_file():
                found.append(Problem(page, "broken link", f"{label}: {rel} does not exist"))
                continue
            fragment = unquote(urlsplit(url).fragment)
            if fragment and path.suffix == ".html":
                ids = self.ids.get(rel)
                if ids is None:
                    ids = self.ids[rel] = _ids_on_disk(path)
                if fragment not in ids:
                    found.append(Problem(page, "missing anchor", f"{label}: no #{fragment} on {rel}"))
        return found


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _first_line(text: str) -> str:
    lines = _lines(text)
    return lines[0][:200] if lines else ""


def _last_line(text: str) -> str:
    lines = _lines(text)
    return lines[-1][:200] if lines else ""


def _error_line(text: str) -> str:
    lines = _lines(text)
    hits = [line for line in lines if "Error" in line]
    return (hits[-1] if hits else lines[-1] if lines else "")[:200]


def _shot_name(page: str) -> str:
    return page.removesuffix(".html").replace("/", "_") + ".png"


def check_site(
    site: Path | str,
    screenshots: Path | str | None = None,
    shot_pages: Iterable[str] = SCREENSHOT_PAGES,
    *,
    chromium: str = CHROMIUM,
    timeout: float = 30.0,
) -> Report:
    """Check every page of a built site in headless Chromium.

    Parameters
    ----------
    site
        The root of the built site, such as ``book/_build/html``.
    screenshots
        Folder for full-page PNG screenshots of ``shot_pages``; ``None`` takes none.
    shot_pages
        Pages to screenshot, relative to ``site``; a missing one is a problem when ``screenshots`` is given.
    chromium
        The Chromium binary to drive.
    timeout
        Seconds allowed for a page to load.

    Returns
    -------
    What was found; ``report.ok`` tells whether the site passes.

    Raises
    ------
    FileNotFoundError
        If ``site`` is not a folder or ``chromium`` does not exist.
    """
    from playwright.sync_api import sync_playwright

    site = Path(site).resolve()
    if not site.is_dir():
        raise FileNotFoundError(f"{site} is not a folder; build the book first (make book)")
    if not Path(chromium).exists():
        raise FileNotFoundError(f"{chromium} not found; install it with: apt-get install -y chromium")
    start = time.perf_counter()
    report = Report(pages=find_pages(site))
    shots = set(shot_pages) if screenshots is not None else set()
    for missing in sorted(shots - set(report.pages)):
        report.problems.append(Problem(missing, "page", "does not exist, so it has no screenshot"))
    visits: dict[str, _Visit] = {}
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        checker = _Checker(site, base, browser, timeout)
        try:
            for page in report.pages:
                target = _redirect_target((site / page).read_text(encoding="utf-8", errors="replace"))
                if target is not None:  # a meta-refresh redirect, such as index.html: only its target is checked
                    visits[page] = _Visit(data={"links": [{"attr": target, "url": base + _join(page, target)}]})
                    continue
                shot = Path(screenshots) / _shot_name(page) if page in shots else None
                try:
                    visits[page] = checker.visit(page, shot)
                except Exception as error:  # noqa: BLE001 - report the page and go on with the others
                    report.problems.append(Problem(page, "page", f"could not be checked: {error}"))
                    continue
                checker.ids[page] = set(visits[page].data.get("ids", []))
                if shot is not None:
                    report.screenshots.append(shot)
        finally:
            checker.close()
            browser.close()
    for page, visit in visits.items():
        report.problems += checker.problems(page, visit)
        report.problems += checker.link_problems(page, visit.data.get("links", []))
    report.problems = sorted(set(report.problems))
    report.external = checker.external
    report.seconds = time.perf_counter() - start
    return report


def _join(page: str, href: str) -> str:
    # The URL path of ``href`` written on ``page``, relative to the site root.
    return urljoin("/" + page, href).lstrip("/")


def main(argv: list[str] | None = None) -> int:
    """Run the check from the command line.

    Parameters
    ----------
    argv
        The arguments, without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    0 when every page passes, 1 when a problem was found, 2 when the check could not run.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site, such as book/_build/html")
    parser.add_argument("--screenshots", type=Path, help="folder for full-page PNG screenshots")
    parser.add_argument(
        "--shot", action="append", metavar="PAGE", help=f"page to screenshot (repeatable; default: {SCREENSHOT_PAGES})"
    )
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium binary (default: {CHROMIUM})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per page (default: 30)")
    args = parser.parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("book-check: the Python package playwright is missing; pip install playwright", file=sys.stderr)
        return 2
    try:
        report = check_site(
            args.site, args.screenshots, args.shot or SCREENSHOT_PAGES, chromium=args.chromium, timeout=args.timeout
        )
    except FileNotFoundError as error:
        print(f"book-check: {error}", file=sys.stderr)
        return 2
    for url, pages in sorted(report.external.items()):
        print(f"note: blocked a request to another host (not counted): {url} from {', '.join(sorted(pages))}")
    for shot in report.screenshots:
        print(f"screenshot: {shot}")
    for problem in report.problems:
        print(f"FAIL {problem}")
    repeated = Counter((p.kind, p.detail) for p in report.problems)
    for (kind, detail), count in sorted(repeated.items()):
        if count > 1:
            print(f"book-check: the same {kind} on {count} pages: {detail}")
    verdict = "passed" if report.ok else f"FAILED with {len(report.problems)} problem(s)"
    print(f"book-check: {len(report.pages)} pages {verdict} in {report.seconds:.1f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
