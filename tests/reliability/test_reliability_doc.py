"""docs/reliability.md stays true: its table is the one the tests declare."""

import ast

from tests.reliability.table import DOC, FOLDER, collect, render, table_in


def test_the_document_holds_the_table_the_tests_declare():
    assert table_in(DOC.read_text()) == render(collect()), (
        "docs/reliability.md is out of date: run python -m tests.reliability.table")


def test_every_reliability_test_declares_what_it_tries():
    declared = {row.test for row in collect()}
    found = set()
    for path in FOLDER.glob("test_*.py"):
        if path.name == "test_reliability_doc.py":
            continue
        tree = ast.parse(path.read_text())
        found |= {f"tests/reliability/{path.name}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert found and found == declared
