"""Every python snippet of docs/sde.md runs."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sde.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_snippets():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_doc_snippet_runs(index, capsys):
    exec(compile(SNIPPETS[index], f"docs/sde.md snippet {index}", "exec"), {})
