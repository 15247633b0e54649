"""Every solution of the workshop pages runs, and every number quoted under it is the number it prints.

The convention, which the pages state to participants too:

* An exercise is a ``### Exercise N: title`` section of a ``book/workshop*.md`` page. Its solution is the first
  ```` ```python ```` block inside the ```` ````{dropdown} Solution ```` that follows; it is a complete script, run
  here in a fresh namespace, with a temporary folder as the working directory and one torch thread (the quoted
  numbers were made that way; other thread counts can change the last digits of a trained model's numbers).
* A solution reports its outcome as ``name = value`` lines (``print(f"nk_auroc = {auroc:.3f}")``). Anywhere in the
  dropdown after the code, a ``name = value`` line of a ```` ```text ```` block or an inline code span
  ```` `name = value` ```` quotes that outcome, and is compared with the value the run printed last under that name:

  - a number with a decimal point must agree to within one unit of its last quoted digit (``0.97`` means 0.96 to
    0.98), an integer exactly, anything else (a cell type, a gene list, ``True``) as the same text;
  - a quote may state its own tolerance, ``name = 0.97 ± 0.02`` (or ``+-``), where a number is known to move.

* A ```` ```python ```` block in the exercise text (before the dropdown) whose first line is ``# check yourself`` is a
  participant's self-check; it is run after the solution, in the solution's namespace.

So a quoted number can never go stale: change the code, the data or a default, and the test names the quote that
no longer holds.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = sorted((ROOT / "book").glob("workshop*.md"))

EXERCISE = re.compile(r"^### (Exercise [^\n]+)$", re.MULTILINE)
DROPDOWN = re.compile(r"^````\{dropdown\} Solution[^\n]*\n(.*?)^````[ \t]*$", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# name = value, optionally followed by a tolerance; a name is an identifier, possibly dotted or with [index].
ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][\w.\[\]'\"]*)\s=\s(.+?)(?:\s+(?:±|\+-)\s*([0-9.eE+-]+))?\s*$")
NUMBER = re.compile(r"^[+-]?(\d+)(\.(\d+))?$")


@dataclass
class Quote:
    """A ``name = value`` quoted under a solution."""

    name: str
    value: str
    tolerance: float | None = None

    def check(self, printed: str) -> str | None:
        """Return what is wrong when ``printed`` does not agree with the quote, else ``None``."""
        quoted = NUMBER.match(self.value)
        if quoted is None or NUMBER.match(printed) is None:
            return (
                None
                if printed == self.value
                else f"{self.name} is quoted as {self.value!r}, the run printed {printed!r}"
            )
        tolerance = self.tolerance
        if tolerance is None:
            decimals = quoted.group(3)
            tolerance = 10.0 ** -len(decimals) if decimals else 0.0
        if abs(float(printed) - float(self.value)) <= tolerance * (1 + 1e-9):
            return None
        return f"{self.name} is quoted as {self.value} (± {tolerance:g}), the run printed {printed}"


@dataclass
class Exercise:
    """One exercise of a workshop page: its solution, its self-checks and its quotes."""

    page: str
    title: str
    line: int
    solution: str
    checks: list[str] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.title.split(':')[0].removeprefix('Exercise ')}"


def parse_assignments(text: str) -> dict[str, str]:
    """The ``name = value`` lines of ``text``, the last value of each name."""
    found = {}
    for line in text.splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def parse_quotes(text: str) -> list[Quote]:
    """The quotes of a dropdown's text after its code: ``text`` blocks' lines and inline code spans."""
    candidates = []
    for language, body in FENCE.findall(text):
        if language == "text":
            candidates += body.splitlines()
    prose = FENCE.sub("", text)
    candidates += INLINE.findall(prose)
    quotes = []
    for candidate in candidates:
        match = ASSIGNMENT.match(candidate)
        if match:
            tolerance = float(match.group(3)) if match.group(3) else None
            quotes.append(Quote(match.group(1), match.group(2).strip(), tolerance))
    return quotes


def parse_page(path: Path) -> list[Exercise]:
    """Every exercise of a workshop page, in order."""
    text = path.read_text(encoding="utf-8")
    heads = list(EXERCISE.finditer(text))
    exercises = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[head.end() : end]
        dropdown = DROPDOWN.search(body)
        if dropdown is None:
            raise AssertionError(f"{path.name}: {head.group(1)} has no ````{{dropdown}} Solution")
        inner = dropdown.group(1)
        code = next(((m.group(2), m) for m in FENCE.finditer(inner) if m.group(1) == "python"), None)
        if code is None:
            raise AssertionError(f"{path.name}: the solution of {head.group(1)} has no python block")
        checks = [
            b
            for lang, b in FENCE.findall(body[: dropdown.start()])
            if lang == "python" and b.startswith("# check yourself")
        ]
        exercises.append(
            Exercise(
                page=path.name,
                title=head.group(1),
                line=text.count("\n", 0, head.start()) + 1,
                solution=code[0],
                checks=checks,
                quotes=parse_quotes(inner[code[1].end() :]),
            )
        )
    return exercises


EXERCISES = [exercise for page in PAGES for exercise in parse_page(page)]


def run_solution(exercise: Exercise) -> tuple[dict, str]:
    """Run a solution and its self-checks in a fresh namespace; return the namespace and what it printed."""
    namespace = {"__name__": "__workshop__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(exercise.solution, f"{exercise.page}, {exercise.title}", "exec"), namespace)
        for check in exercise.checks:
            exec(compile(check, f"{exercise.page}, {exercise.title} (check yourself)", "exec"), namespace)
    return namespace, out.getvalue()


def compare(exercise: Exercise, printed: str) -> list[str]:
    """What is wrong with the quotes of an exercise, given what its solution printed."""
    values = parse_assignments(printed)
    problems = []
    for quote in exercise.quotes:
        if quote.name not in values:
            problems.append(f"{quote.name} is quoted but the solution printed no '{quote.name} = ...' line")
            continue
        problem = quote.check(values[quote.name])
        if problem:
            problems.append(problem)
    return problems


@pytest.fixture
def workshop_run(tmp_path, monkeypatch):
    """A temporary working folder, one torch thread, the Agg backend; figures closed afterwards."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    plt.close("all")


def test_pages_have_exercises():
    names = {page.name for page in PAGES}
    assert {"workshop.md", "workshop_morning.md", "workshop_afternoon.md"} <= names
    for page in ("workshop_morning.md", "workshop_afternoon.md"):
        exercises = [e for e in EXERCISES if e.page == page]
        assert len(exercises) >= 3, f"{page} has {len(exercises)} exercises; a block needs at least three"
    for exercise in EXERCISES:
        assert exercise.quotes, f"{exercise.id}: no 'name = value' quote of the outcome under the solution"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.id for e in EXERCISES])
def test_solution(exercise, workshop_run):
    start = time.perf_counter()
    _, printed = run_solution(exercise)
    problems = compare(exercise, printed)
    seconds = time.perf_counter() - start
    print(f"{exercise.id}: {seconds:.1f} s, {len(exercise.quotes)} quotes checked")
    assert not problems, f"{exercise.id} (line {exercise.line}):\n" + "\n".join(problems) + f"\n\nprinted:\n{printed}"


SAMPLE = """### Exercise 1: a toy

```python
# check yourself
assert answer > 1
```

````{dropdown} Solution
```python
answer = 41 + 1
print(f"answer = {answer}")
print(f"ratio = {answer / 100:.3f}")
print("label = CD14+ Monocyte")
```

Output:

```text
answer = 42
ratio = 0.420
label = CD14+ Monocyte
```

The answer is `answer = 42` and the ratio `ratio = 0.42 ± 0.01`.
````
"""


def _sample(tmp_path: Path, text: str) -> Exercise:
    path = tmp_path / "workshop_sample.md"
    path.write_text(text, encoding="utf-8")
    (exercise,) = parse_page(path)
    return exercise


def test_convention_on_a_sample(tmp_path):
    exercise = _sample(tmp_path, SAMPLE)
    assert [q.name for q in exercise.quotes] == ["answer", "ratio", "label", "answer", "ratio"]
    assert exercise.quotes[-1].tolerance == 0.01
    assert len(exercise.checks) == 1
    _, printed = run_solution(exercise)
    assert compare(exercise, printed) == []


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("answer = 42\n", "answer = 43\n", "answer is quoted as 43"),
        ("ratio = 0.420", "ratio = 0.425", "ratio is quoted as 0.425"),
        ("`ratio = 0.42 ± 0.01`", "`ratio = 0.44 ± 0.01`", "ratio is quoted as 0.44"),
        ("label = CD14+ Monocyte\n```", "label = CD56+ NK\n```", "label is quoted as 'CD56+ NK'"),
        ("`answer = 42`", "`answers = 42`", "printed no 'answers = ...' line"),
    ],
)
def test_a_changed_quote_fails(tmp_path, old, new, message):
    assert old in SAMPLE
    exercise = _sample(tmp_path, SAMPLE.replace(old, new, 1))
    _, printed = run_solution(exercise)
    problems = compare(exercise, printed)
    assert any(message in p for p in problems), problems


def test_a_failing_self_check_fails(tmp_path):
    exercise = _sample(tmp_path, SAMPLE.replace("assert answer > 1", "assert answer > 100"))
    with pytest.raises(AssertionError):
        run_solution(exercise)
