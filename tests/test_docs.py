"""The README stays a newcomer's page, its links and the docs' links resolve, and docs/cli.md
names exactly the flags that each command's ``--help`` lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
README_LIMIT = 20_000

# A Markdown link or image target: [text](target) (not inside code spans: see _prose).
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A long flag; it ends in a letter or digit, so "--a-b," and "--a_b." give "--a-b" and "--a_b".
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]")
_SECTION = re.compile(r"^## fashion-enrich (\w+)\s*$")
# Commands that take every 'run' option besides their own (their --help says so).
TAKES_RUN_OPTIONS = ("nightly", "dataflow", "prepare", "mapping")
# Commands whose remaining options go to Beam's PipelineOptions.
TAKES_BEAM_OPTIONS = ("run", "nightly", "dataflow")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks (links there are examples, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = _slug(match.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _relative_links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(path.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ... are not checked


def test_readme_is_a_newcomers_page():
    size = len(README.read_text(encoding="utf-8"))
    assert size <= README_LIMIT, f"README.md has {size} characters; move reference material into docs/"


def test_readme_links_the_docs_pages():
    targets = {t.split("#")[0] for t in _relative_links(README)}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert {"docs/cli.md", "docs/schema.md", "docs/formats.md", "docs/models.md", "docs/operations.md"} <= pages
    assert pages <= targets, f"docs pages the README does not link: {sorted(pages - targets)}"


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)}: links to missing files or headings: {broken}"


def test_slug_follows_github():
    assert _slug("fashion-enrich run") == "fashion-enrich-run"
    assert _slug("Images: fetch, cache, decode") == "images-fetch-cache-decode"
    assert _slug("`dead_letter`") == "dead_letter"


# -- docs/cli.md against --help ---------------------------------------------------------------

def _canonical(flags) -> set[str]:
    """``--run_date`` and ``--run-date`` are one option (the run options take both spellings)."""
    return {f.replace("_", "-") for f in flags} - {"--help"}


def _cli_sections() -> dict[str, str]:
    sections: dict[str, str] = {}
    current = None
    for line in CLI_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            match = _SECTION.match(line)
            current = match.group(1) if match else None
            if current:
                assert current not in sections, f"two sections for {current}"
                sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


@pytest.fixture(scope="module")
def help_flags() -> dict[str, set[str]]:
    """The long flags each command's --help lists, from ``runners.cli.COMMANDS`` in-process."""
    import contextlib
    import io

    from runners.cli import COMMANDS

    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "10000")  # argparse wraps help text at hyphens: keep every flag on one line
        for command, handler in COMMANDS.items():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    code = handler(["--help"])
                except SystemExit as exc:  # argparse's --help
                    code = exc.code
            assert code in (0, None), f"{command} --help exited {code}"
            found[command] = _canonical(_FLAG.findall(out.getvalue()))
            assert found[command], f"no flags found in 'fashion-enrich {command} --help'"
    return found


@pytest.fixture(scope="module")
def beam_flags() -> set[str]:
    """Every option Beam's PipelineOptions knows (the project's own included)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return _canonical(f"--{name}" for name in PipelineOptions([]).get_all_options())


def test_cli_doc_has_one_section_per_command():
    from runners.cli import COMMANDS

    assert sorted(_cli_sections()) == sorted(COMMANDS), "docs/cli.md: one '## fashion-enrich <command>' per command"


def test_cli_doc_names_every_flag_of_every_help(help_flags):
    sections = _cli_sections()
    missing = {c: sorted(flags - _canonical(_FLAG.findall(sections.get(c, ""))))
               for c, flags in help_flags.items()}
    assert {c: m for c, m in missing.items() if m} == {}, "flags in --help but not in docs/cli.md"


def test_cli_doc_names_no_flag_the_command_lacks(help_flags, beam_flags):
    unknown = {}
    for command, text in _cli_sections().items():
        known = set(help_flags[command])
        if command in TAKES_RUN_OPTIONS:
            known |= help_flags["run"]
        if command in TAKES_BEAM_OPTIONS:
            known |= beam_flags
        extra = _canonical(_FLAG.findall(text)) - known
        if extra:
            unknown[command] = sorted(extra)
    assert unknown == {}, "flags in docs/cli.md that the command's --help (or Beam) does not know"


def test_cli_doc_names_the_global_flags():
    """The flags of the top-level usage text (e.g. --verbose) are documented too."""
    from runners.cli import USAGE

    assert _canonical(_FLAG.findall(USAGE)) <= _canonical(_FLAG.findall(CLI_DOC.read_text(encoding="utf-8")))


def test_flag_pattern():
    text = "usage: [--run_date RUN_DATE] --temp-location, (--source NAME=PATH[:MAPPING], --zalando ...) -- x-"
    assert _FLAG.findall(text) == ["--run_date", "--temp-location", "--source", "--zalando"]
    assert _canonical(["--run_date", "--run-date", "--help"]) == {"--run-date"}


def test_ci_runs_exactly_the_readmes_commands():
    """Every command .ci/run executes is a line of the README's code blocks, and the README's
    install, browser and test lines are all in .ci/run (a missing install step fails CI)."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", README.read_text(), re.S))
    readme = {line.split("  #")[0].strip() for line in blocks.splitlines()}
    assert ci and all(line in readme for line in ci), (ci, readme)
    for needed in ('pip install -e ".[test]"', "python -m pytest -q", "apt-get install"):
        assert any(needed in line for line in ci), needed
