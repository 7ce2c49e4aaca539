"""The Python snippets of README.md and docs/*.md: every block marked `<!-- runnable -->` runs as written (tiny
models, no weights, no download), so a snippet that stops working fails the suite; every other block says why it
does not run. The convention is in docs/contributing.md. Also: the pages' relative links resolve."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- (runnable|not runnable: .+) -->")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    """(page, line, marker or None, code) for every ```python block."""
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = MARK.fullmatch(before.strip())
            line = text.count("\n", 0, m.start()) + 1
            yield page, line, mark.group(1) if mark else None, m.group(1)


BLOCKS = list(_blocks())
RUNNABLE = [(p, n, code) for p, n, mark, code in BLOCKS if mark == "runnable"]


def _id(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT)}:{line}"


def test_every_python_block_is_marked():
    unmarked = [_id(p, n) for p, n, mark, _ in BLOCKS if mark is None]
    assert not unmarked, f"mark these blocks <!-- runnable --> or <!-- not runnable: why -->: {unmarked}"
    readme = [_id(p, n) for p, n, mark, _ in BLOCKS if p.name == "README.md" and mark != "runnable"]
    assert not readme, f"the README's snippets must run as written: {readme}"
    assert RUNNABLE


@pytest.fixture
def one_thread():
    # the tiny pipelines' matmuls are too small to share; on a busy 2-core machine two threads were 5-40x slower
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("page, line, code", RUNNABLE, ids=[_id(p, n) for p, n, _ in RUNNABLE])
def test_snippet_runs(page, line, code, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands here
    source = compile("\n" * line + code, str(page), "exec")  # tracebacks point at the page's own line numbers
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(source, {"__name__": "__snippet__"})
    # a figure a snippet quotes after a print is what the print writes: `print(x)  # {'full': 24, ...}: ...`
    quoted = [m.group(1) for m in map(QUOTE.search, code.splitlines()) if m]
    stale = [q for q in quoted if q not in out.getvalue()]
    assert not stale, f"{_id(page, line)} quotes {stale}, but printed:\n{out.getvalue()}"


# the leading literal of a comment on a print line: a dict, list or tuple display, or a number
QUOTE = re.compile(r"^\s*print\(.*\)\s+#\s+(\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|\d[\d.]*)")


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    broken = [target for target, _ in LINK.findall(page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken
