"""``dynvae train --model NAME --list-keys``: the ``--set`` keys of a model, with their
types, defaults and the documentation its config classes give them.

A field's documentation is its trailing ``# comment`` in the class source, or the
``name: text`` entry of the class docstring (several names may share one entry:
``transition_bias, emission_bias: learn b, d.``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

_MARKUP = [(re.compile(r":\w+:`~?([^`]+)`"), r"\1"), (re.compile(r"``([^`]+)``"), r"\1")]


def plain(text: str) -> str:
    """``text`` without reStructuredText markup (roles and double backquotes)."""
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def _comments(cls) -> dict[str, str]:
    """Trailing ``# comments`` of the field lines in the class body, with the comment-only
    lines right after one that continue it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found, name = {}, None
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#=]+(?:=[^#]*)?#\s*(.+)$", line)
        if match:
            name = match.group(1)
            found[name] = match.group(2).strip()
            continue
        more = re.match(r"\s*#\s*(.+)$", line)
        if name is not None and more:
            found[name] += " " + more.group(1).strip()
        else:
            name = None
    return found


def _docstring_entries(cls, names: list[str]) -> dict[str, str]:
    """``name: text`` entries of the class docstring, for the field ``names``."""
    doc = " ".join((inspect.getdoc(cls) or "").split())
    field = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    if not field:
        return {}
    key = re.compile(rf"(?<![\w.`])((?:{field})(?:, (?:{field}))*): ")
    matches = list(key.finditer(doc))
    found = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        text = doc[match.end():end].strip()
        if i + 1 == len(matches):      # the last entry ends with its sentence: what follows
            cut = re.search(r"(?<!e\.g)(?<!i\.e)\.\s+[A-Z]", text)  # closing prose after it
            text = text if cut is None else text[:cut.start() + 1]
        for name in match.group(1).split(", "):
            found.setdefault(name, text)
    return found


def field_docs(cls) -> dict[str, str]:
    """Documentation of each field of dataclass ``cls`` ("" when it has none)."""
    names = [f.name for f in dataclasses.fields(cls)]
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):      # fields inherited from dataclass bases
        if dataclasses.is_dataclass(base):
            docs.update(_docstring_entries(base, names))
            docs.update(_comments(base))
    docs.update(_docstring_entries(cls, names))
    docs.update(_comments(cls))
    return {n: plain(docs.get(n, "")) for n in names}


def _type_name(kind) -> str:
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def describe(sections: dict[str, type], width: int = 100) -> str:
    """The keys of every config section as aligned text: key, type, default, doc."""
    import textwrap
    lines = ["--set KEY=VALUE takes these keys (or SECTION.KEY when a name is in two "
             "sections):"]
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        rows = [(f.name, _type_name(hints[f.name]), _default(f), docs[f.name])
                for f in dataclasses.fields(cls)]
        lines.append(f"\n{section} ({cls.__name__}):")
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        w2 = max(len(r[2]) for r in rows)
        indent = 2 + w0 + 2 + w1 + 2 + w2 + 2
        for name, kind, default, doc in rows:
            head = f"  {name:<{w0}}  {kind:<{w1}}  {default:<{w2}}  "
            wrapped = textwrap.wrap(doc, max(30, width - indent)) or [""]
            lines.append((head + wrapped[0]).rstrip())
            lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)
