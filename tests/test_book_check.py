"""scripts/book_check.py against a tiny hand-made site: each kind of problem is caught, the good pages pass."""

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")

pytest.importorskip("playwright", reason="the book check needs the Python package playwright")
if not CHROMIUM.exists():
    pytest.skip(f"the book check needs {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _load_checker():
    spec = importlib.util.spec_from_file_location("book_check", ROOT / "scripts" / "book_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


book_check = _load_checker()


def _png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _html(body: str, head: str = "", title: str = "page") -> str:
    head = f"<meta charset='utf-8'><title>{title}</title>{head}"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


TRACEBACK = """<div class="cell docutils container"><div class="cell_input docutils container"><pre>1/0</pre></div>
<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb notranslate">
<div class="highlight"><pre>---------------------------------------------------------------------------
ZeroDivisionError                         Traceback (most recent call last)
Cell In[2], line 1
----&gt; 1 1/0

ZeroDivisionError: division by zero</pre></div></div></div></div>"""

STDERR_TRACEBACK = """<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output stderr highlight-myst-ansi notranslate"><div class="highlight">
<pre>Traceback (most recent call last):
  File "&lt;ipython-input&gt;", line 3, in &lt;module&gt;
KeyError: 'leiden'</pre></div></div></div></div>"""

# A stderr output that is no error (a warning, a progress bar) must not fail a page.
STDERR_WARNING = """<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output stderr highlight-myst-ansi notranslate"><div class="highlight"><pre>UserWarning: few cells
100%|##########| 10/10</pre></div></div></div></div>"""

GOOD_PAGES = {
    "intro.html": _html(
        '<h1 id="top">Intro</h1><img src="_images/ok.png" alt="ok">'
        '<p><a href="other.html#section">other</a> <a href="#top">top</a> <a href="sub/">sub</a> '
        '<a href="_images/ok.png">image</a> <a href="https://example.com/nowhere.html">external</a> '
        '<a href="mailto:someone@example.com">mail</a> <a href="javascript:void(0)">js</a></p>' + STDERR_WARNING,
        # A theme fetching a font from the internet: blocked, reported as a note, not a failure.
        head='<link rel="stylesheet" href="https://fonts.example.invalid/font.css">',
        title="Intro",
    ),
    "other.html": _html(
        '<h2 id="section">Section</h2><a href="intro.html">back</a> <a href="atlas/index.html">atlas</a>',
        title="Other",
    ),
    # A feature atlas (pl.atlas) is left to scripts/atlas_check.py: its #feature=N links are no anchors.
    "atlas/index.html": _html('<a href="#feature=3">3</a><script src="atlas.js"></script>'),
    "atlas/atlas.js": "",
    "atlas/data/index.js": "window.ATLAS_INDEX = {};",
    "sub/index.html": _html('<a href="../intro.html#top">up</a>'),
    "index.html": '<meta http-equiv="Refresh" content="0; url=intro.html" />',
    # Theme macros that Sphinx copies into _static are not pages.
    "_static/macros.html": _html('<a href="does-not-exist.html">x</a><script>throw new Error("x")</script>'),
}

BAD_PAGES = {
    "broken_image.html": _html('<img src="_images/missing.png"><img src="_images/corrupt.png">'),
    "broken_link.html": _html('<a href="nowhere.html">gone</a>'),
    "missing_anchor.html": _html('<a href="other.html#no-such-section">there</a>'),
    "js_error.html": _html('<script>throw new Error("boom");</script><script>console.error("bad thing");</script>'),
    "cell_error.html": _html(TRACEBACK + STDERR_TRACEBACK),
    "redirect.html": '<meta http-equiv="refresh" content="0; url=gone.html" />',
    # Without the atlas's scripts beside it, an atlas's page is a page of the book, and its links are checked.
    "not_atlas/index.html": _html('<a href="#feature=3">3</a>'),
}


# Dropdowns as sphinx-design renders them: <details class="sd-dropdown"><summary>...</summary><div>...</div>.
def _dropdown(body: str, title: str = "Solution", attrs: str = "") -> str:
    return (
        f'<details class="sd-sphinx-override sd-dropdown sd-card"{attrs}><summary class="sd-summary-title">'
        f'{title}</summary><div class="sd-summary-content sd-card-body"><pre>{body}</pre></div></details>'
    )


WORKSHOP_PAGES = {
    # Both dropdowns open on click, one of them already open (the click closes it, a second click reopens it).
    "workshop_ok.html": _html(_dropdown("print(1)") + _dropdown("print(2)", "Hint", " open")),
    "workshop_broken.html": _html(
        _dropdown("never shown", "Stuck")
        + _dropdown("", "Empty").replace("<pre></pre>", "")
        + _dropdown("Traceback (most recent call last):\nValueError: bad quote", "Failing")
        + "<script>document.querySelector('summary').addEventListener('click', (e) => e.preventDefault());</script>"
    ),
    # Dropdowns on other pages are not clicked.
    "not_workshop.html": _html(
        _dropdown("x", "Stuck") + "<script>document.querySelector('summary')"
        ".addEventListener('click', (e) => e.preventDefault());</script>"
    ),
}


def _write_site(root: Path, pages: dict[str, str]) -> Path:
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "_images").mkdir(exist_ok=True)
    (root / "_images" / "ok.png").write_bytes(_png())
    (root / "_images" / "corrupt.png").write_bytes(b"this is not a PNG")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    site = _write_site(tmp_path_factory.mktemp("site"), GOOD_PAGES | BAD_PAGES | WORKSHOP_PAGES)
    return book_check.check_site(site, tmp_path_factory.mktemp("shots"), ["intro.html", "workshop_ok.html"], timeout=20)


def _kinds(report, page):
    return sorted(p.kind for p in report.for_page(page))


def test_every_page_is_visited_but_static_files_and_atlases(report):
    pages = {p for p in GOOD_PAGES if p.endswith(".html")} - {"_static/macros.html", "atlas/index.html"}
    assert report.pages == sorted(pages | set(BAD_PAGES) | set(WORKSHOP_PAGES))


def test_a_page_that_is_no_atlas_has_its_links_checked(report):
    (problem,) = report.for_page("not_atlas/index.html")
    assert problem.kind == "missing anchor" and "#feature=3" in problem.detail


@pytest.mark.parametrize("page", ["intro.html", "other.html", "sub/index.html", "index.html"])
def test_good_pages_pass(report, page):
    assert report.for_page(page) == []


def test_missing_and_undecodable_images(report):
    problems = report.for_page("broken_image.html")
    assert _kinds(report, "broken_image.html") == ["missing image", "missing image"]
    assert any("_images/missing.png" in p.detail and "404" in p.detail for p in problems)
    assert any("_images/corrupt.png" in p.detail and "naturalWidth 0" in p.detail for p in problems)


def test_broken_internal_link(report):
    (problem,) = report.for_page("broken_link.html")
    assert problem.kind == "broken link"
    assert "nowhere.html does not exist" in problem.detail
    assert str(problem).startswith("broken_link.html: broken link: href='nowhere.html'")


def test_missing_anchor(report):
    (problem,) = report.for_page("missing_anchor.html")
    assert problem.kind == "missing anchor"
    assert "no #no-such-section on other.html" in problem.detail


def test_redirect_to_a_missing_page(report):
    (problem,) = report.for_page("redirect.html")
    assert problem.kind == "broken link" and "gone.html" in problem.detail


def test_javascript_errors(report):
    problems = report.for_page("js_error.html")
    assert _kinds(report, "js_error.html") == ["JavaScript error", "JavaScript error"]
    assert any("uncaught Error: boom" in p.detail for p in problems)
    assert any("console.error: bad thing" in p.detail for p in problems)


def test_notebook_cell_errors(report):
    details = sorted(p.detail for p in report.for_page("cell_error.html"))
    assert _kinds(report, "cell_error.html") == ["cell error", "cell error"]
    assert details == [
        "cell 1 shows an error: ZeroDivisionError: division by zero",
        "cell 2 writes to stderr: KeyError: 'leiden'",
    ]


def test_external_requests_are_blocked_and_noted(report):
    assert report.external == {"https://fonts.example.invalid/font.css": {"intro.html"}}


def test_screenshot(report):
    assert [shot.name for shot in report.screenshots] == ["intro.png", "workshop_ok.png"]
    assert all(shot.read_bytes().startswith(b"\x89PNG") for shot in report.screenshots)


@pytest.mark.parametrize("page", ["workshop_ok.html", "not_workshop.html"])
def test_dropdowns_that_open_pass(report, page):
    assert report.for_page(page) == []


def test_dropdowns_that_fail(report):
    details = sorted(str(p) for p in report.for_page("workshop_broken.html"))
    assert details == [
        "workshop_broken.html: cell error: dropdown 3 ('Failing') shows a traceback: ValueError: bad quote",
        "workshop_broken.html: dropdown: dropdown 1 ('Stuck') does not open when clicked",
        "workshop_broken.html: dropdown: dropdown 2 ('Empty') opens but shows no content",
    ]


def test_cli_exit_codes(tmp_path, capsys):
    good = _write_site(tmp_path / "good", GOOD_PAGES)
    shots = tmp_path / "shots"
    assert (
        book_check.main([str(good), "--screenshots", str(shots), "--shot", "intro.html", "--shot", "sub/index.html"])
        == 0
    )
    assert sorted(p.name for p in shots.iterdir()) == ["intro.png", "sub_index.png"]
    assert "4 pages passed" in capsys.readouterr().out

    bad = _write_site(tmp_path / "bad", GOOD_PAGES | {"js_error.html": BAD_PAGES["js_error.html"]})
    assert book_check.main([str(bad), "--screenshots", str(shots)]) == 1
    out = capsys.readouterr().out
    assert "FAIL js_error.html: JavaScript error: uncaught Error: boom" in out
    # The default screenshot pages: intro.html exists, tutorials/quickstart.html does not.
    assert "FAIL tutorials/quickstart.html: page: does not exist" in out

    assert book_check.main([str(tmp_path / "no-such-site")]) == 2
