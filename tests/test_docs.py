"""The docs a newcomer reads: README.md short, with the two commands first; every `evaluator.py` flag
the docs name exists in the command line's parser, with the values it takes, and every flag the
parser has is documented; every relative link (and its #anchor) resolves. Fast: the parser is built
in-process, nothing is evaluated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmark.cli import build_parser
from tests.conftest import REPO

README = REPO / "README.md"
README_LIMIT = 15 * 1024  # bytes: a README a newcomer reads in five minutes
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
# Words that start another command line in the docs: a flag after one of these, in the same
# paragraph, list item, table row or command, is that command's, not evaluator.py's.
COMMAND = re.compile(r"python3? evaluator\.py|evaluate\.py|python -m benchmark [\w-]+|measure/[\w/.-]+|openevolve-run"
                     r"|shinka_run|\bpytest\b|\bpip install\b|examples/search/run\.py|\bmake\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks(text: str) -> list:
    """The units a flag belongs to: each command of a fenced code block (continuation lines, which
    are indented or follow a trailing backslash, joined), and each prose paragraph, list item or
    table row."""
    out, current, fenced = [], [], False

    def flush():
        if current:
            out.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continued = line[:1].isspace() or (current and current[-1].endswith("\\"))
            if not continued:
                flush()
            current.append(line.strip())
        elif not line.strip() or line.lstrip().startswith(("- ", "* ", "|", "#")) or re.match(r"\s*\d+\. ", line):
            flush()
            if line.strip():
                current.append(line.strip())
        else:
            current.append(line.strip())
    flush()
    return out


def evaluator_flags(text: str) -> list:
    """(flag, values or None) for each flag the text names for evaluator.py: every flag not after
    another command's name in its block. `values` is the set written as `--flag a|b|c`."""
    found = []
    for block in blocks(text):
        events = sorted([(m.start(), "command", m.group()) for m in COMMAND.finditer(block)]
                        + [(m.start(), "flag", m) for m in FLAG.finditer(block)], key=lambda e: e[0])
        command = "evaluator.py"
        for _, kind, value in events:
            if kind == "command":
                command = "evaluator.py" if value.endswith("evaluator.py") else value
            elif command == "evaluator.py":
                after = re.match(r"[ =]`?([\w.-]+(?:\|[\w.-]+)+)", block[value.end():])
                found.append((value.group(), set(after.group(1).split("|")) if after else None))
    return found


def parser_flags() -> dict:
    """--flag -> its choices (None when it takes any value), from the real parser."""
    flags = {}
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option] = {str(c) for c in action.choices} if action.choices else None
    return flags


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size:,} bytes, over {README_LIMIT:,}: move detail into "
                                  "docs/ and link it")


def test_readme_gives_the_two_commands_first():
    text = README.read_text()
    first = text.split("\n## ", 2)[1]  # the first section after the title's introduction
    code = "\n".join(re.findall(r"```[^\n]*\n(.*?)```", first, re.S))
    commands = [line.split("#")[0].strip() for line in code.splitlines()]
    assert "make run" in commands and "make test" in commands, (
        f"README's first section ({first.splitlines()[0]!r}) must give `make run` and `make test` in a "
        "code block")


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_flag_the_docs_name_exists(doc):
    parser = parser_flags()
    wrong = []
    for flag, values in evaluator_flags(doc.read_text()):
        if flag not in parser:
            wrong.append(f"{flag}: no such flag (python evaluator.py --help)")
        elif values is not None and values != parser[flag]:
            wrong.append(f"{flag} {'|'.join(sorted(values))}: the parser takes {'|'.join(sorted(parser[flag] or []))}")
    assert wrong == [], f"{_name(doc)} names evaluator.py flags that disagree with benchmark/cli.py: {wrong}"


def test_every_flag_is_documented():
    named = {flag for doc in DOCS for flag, _ in evaluator_flags(doc.read_text())}
    missing = sorted(set(parser_flags()) - named)
    assert missing == [], (f"evaluator.py flags no doc names: {missing}; document each in "
                           "docs/results.md (The command line), from its --help text")


def anchors(path: Path) -> set:
    """GitHub's anchors for the headings of a markdown file (code blocks left out)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_relative_link_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert broken == [], f"{_name(doc)} has broken links: {broken}"
