"""README.md and docs/*.md against the repository and the command line.

The reference lives in several pages that link to each other and show commands; both
rot silently when a page or heading is renamed or a flag changes. Two checks, no Ray:

- every relative link points at a file that exists and, with `#anchor`, at a heading
  of that file (anchors as GitHub makes them from heading text);
- every `routebatch COMMAND ... --flag` shown in a code span, a code block or a table
  row names a command and flags that `routebatch` really has (read from its argparse
  parser, so a renamed flag fails here before a reader copies it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced code blocks (links and headings there are not real)."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6} +(.*)$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_matches_github_for_the_headings_we_use() -> None:
    assert slug("Configuration errors (exit code 3)") == "configuration-errors-exit-code-3"
    assert slug("`experts[hf-causal-lm]`") == "expertshf-causal-lm"
    assert slug("A replica that dies is not the client's problem") == "a-replica-that-dies-is-not-the-clients-problem"
    assert slug("Learned routing: profile, train, run") == "learned-routing-profile-train-run"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def _command_mentions(text: str) -> list[tuple[str, str]]:
    """(command, the text its flags are in) for every `routebatch COMMAND` a page shows."""
    found = []
    for block in _FENCE.findall(text):
        joined = re.sub(r"\\\n", " ", block)  # shell line continuations
        for line in joined.splitlines():
            line = line.split(" #", 1)[0]
            for match in re.finditer(r"\broutebatch ([a-z][a-z-]*)(.*?)(?=\broutebatch |$)", line):
                found.append((match.group(1), match.group(2)))
    prose = _prose(text)
    for line in prose.splitlines():
        cells = line.strip().strip("|").split("|") if line.startswith("| `routebatch ") else []
        if cells:
            match = re.match(r"\s*`routebatch ([a-z][a-z-]*)", cells[0])
            if match:  # a table row about one command: every flag in the row is its flag
                found.append((match.group(1), line))
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("| `routebatch "))
    for span in re.findall(r"`([^`]+)`", prose):
        match = re.match(r"^routebatch ([a-z][a-z-]*)(.*)$", span.strip(), flags=re.S)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


@pytest.fixture(scope="module")
def cli_options() -> dict[str, set[str]]:
    from pipelines.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_shown_commands_and_flags_exist(page: Path, cli_options: dict[str, set[str]]) -> None:
    wrong = []
    mentions = _command_mentions(page.read_text(encoding="utf-8"))
    for command, rest in mentions:
        if command not in cli_options:
            wrong.append(f"routebatch {command}: no such command")
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            if flag not in cli_options[command]:
                wrong.append(f"routebatch {command} {flag}: no such option")
    assert not wrong, f"{page.relative_to(REPO)}: " + "; ".join(sorted(set(wrong)))


def test_the_flag_check_sees_the_pages_commands(cli_options: dict[str, set[str]]) -> None:
    """Guards the extraction: the README's commands table alone names every command."""
    commands = {c for c, _ in _command_mentions((REPO / "README.md").read_text(encoding="utf-8"))}
    assert commands == set(cli_options)
