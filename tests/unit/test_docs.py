"""The README and docs/ hold up as written: every relative link reaches a file and a heading,
the README stays a front door (at most 300 lines), and every command they show names what
exists: `jobq` command lines parse with the CLI's own parser (nothing is run), `python -m
bench NAME` names a scenario and its options, `./dev X` one of the script's two commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^\s*```")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    lines: tuple[str, ...]


def blocks(page: Path) -> list[Block]:
    found, current, start, lang = [], None, 0, ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            if current is None:
                current, start, lang = [], number, line.strip().strip("`").strip()
            else:
                found.append(Block(page, start, lang, tuple(current)))
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{rel(page)}:{start}: a code block that never closes"
    return found


def prose(page: Path) -> list[tuple[int, str]]:
    """The lines outside code blocks, with inline code blanked out (a link there is code)."""
    lines, inside = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append((number, line))
    return lines


def inline_code(page: Path) -> list[tuple[int, str]]:
    return [(number, m.group(2).strip()) for number, line in prose(page)
            for m in INLINE_CODE.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose(page):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    return [(number, m.group(1)) for number, line in prose(page)
            for m in LINK.finditer(INLINE_CODE.sub("", line))]


# --- the front door --------------------------------------------------------------------------


def test_the_readme_is_a_front_door_of_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_every_relative_link_reaches_a_file_and_its_heading():
    broken = []
    for page in PAGES:
        for number, target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.is_file():
                broken.append(f"{rel(page)}:{number}: {target}: no such file")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{rel(page)}:{number}: {target}: no heading #{anchor}")
    assert broken == []


def test_the_link_check_sees_links_and_their_headings():
    # So that the test above cannot pass by finding nothing.
    found = {target for page in PAGES for _, target in links(page)}
    assert {"docs/http-api.md", "docs/flower-tasks.png",
            "../README.md#architecture-in-a-screen"} <= found
    assert {"the-two-commands", "architecture-in-a-screen"} <= anchors(README)
    assert slug("`./dev run` and `./dev test` in detail") == "dev-run-and-dev-test-in-detail"


def test_every_page_of_docs_is_linked_from_the_readme_and_every_image_from_a_page():
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for _, target in links(README)}
    assert [rel(doc) for doc in DOCS if doc not in linked] == []
    shown = {(page.parent / target.partition("#")[0]).resolve()
             for page in PAGES for _, target in links(page)}
    images = [p for p in (ROOT / "docs").iterdir() if p.suffix in (".png", ".svg", ".jpg")]
    assert images and [rel(p) for p in images if p not in shown] == []


# --- the commands they show ------------------------------------------------------------------


def command_lines(block: Block) -> list[tuple[int, str]]:
    """The command lines of a shell block: in a console block the ``$ `` lines (and an output
    line that is a jobq command to paste), in a bash block every line; continuations joined."""
    if block.lang not in ("console", "bash", "sh", "shell"):
        return []
    commands, pending, first = [], "", 0
    for offset, raw in enumerate(block.lines, 1):
        line = raw.rstrip()
        if not pending:
            first = block.line + offset
            if block.lang == "console":
                if line.startswith("$ "):
                    line = line[2:]
                elif re.match(r"^\s+\S*/jobq [a-z]", line):  # a printed command to paste
                    line = line.strip()
                else:
                    continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((first, (pending + line).strip()))
        pending = ""
    return [(n, c) for n, c in commands if c and not c.startswith("#")]


def simple_commands(line: str) -> list[list[str]]:
    """Each simple command of a shell line (pipes, ;, && and $(...) split out), as words."""
    inner = re.findall(r"\$\(([^()]*)\)", line)
    outer = re.sub(r"\$\(([^()]*)\)", "X", line)
    found = []
    for text in [outer, *inner]:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|<>"):
                while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                    words.pop(0)  # VAR=value before the command
                if words:
                    found.append(words)
                words = []
            else:
                words.append(token)
    return found


def shown_commands(program: str) -> list[tuple[str, list[str]]]:
    """Every command of `program` in a shell block of the README or docs/, with its words."""
    return [(f"{rel(block.page)}:{number}", words[1:])
            for page in PAGES for block in blocks(page)
            for number, line in command_lines(block)
            for words in simple_commands(line)
            if words[0] == program or words[0].endswith("/" + program)]


def jobq_command():
    """The click command `jobq` runs: the Typer application of the module the entry point names."""
    import importlib
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["jobq"]
    module = importlib.import_module(entry.partition(":")[0])
    (application,) = {id(v): v for v in vars(module).values()
                      if isinstance(v, typer.Typer)}.values()
    return typer.main.get_command(application)


def parse(root, args: list[str]):
    """Parse `jobq ARGS` as the CLI would, down to the subcommand, without invoking anything."""
    ctx = root.make_context("jobq", list(args))
    while hasattr(ctx.command, "commands"):
        rest = [*(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", ())),
                *ctx.args]
        if not rest:
            break
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def test_every_jobq_command_line_shown_parses_with_the_clis_own_parser():
    root = jobq_command()
    shown = shown_commands("jobq")
    assert len(shown) > 30  # the README and docs show many; a parser that sees none is wrong
    refused = []
    for where, args in shown:
        try:
            parse(root, args)
        except Exception as exc:  # click's UsageError and friends: what a user would get
            refused.append(f"{where}: jobq {shlex.join(args)}: {type(exc).__name__}: {exc}")
    assert refused == []


def test_the_parser_refuses_what_the_cli_refuses():
    # The check above is only worth something if a wrong option or command fails it.
    root = jobq_command()
    parse(root, ["dispatch", "system.exec.sleep", "--tenant", "x", "-p", "seconds=1", "--wait"])
    for wrong in (["dispatch", "system.exec.sleep", "--colour", "red"], ["keys", "make"],
                  ["jobs", "--since"], ["retryy", "abc"]):
        with pytest.raises(Exception, match=r"No such|requires an argument|Got unexpected"):
            parse(root, wrong)


def test_every_jobq_command_named_in_the_text_exists_with_the_options_it_names():
    # `jobq retry ID --params-json '{...}'` in a sentence or a table: the subcommands exist and
    # each option is one of that command's (placeholders such as ID or [--tenant T] allowed).
    root = jobq_command()
    wrong, seen = [], 0
    for page in PAGES:
        for number, code in inline_code(page):
            m = re.match(r"^(?:\S*/)?jobq ([a-z].*)$", code)
            if not m:
                continue
            seen += 1
            words = m.group(1).split()
            command, path = root, ["jobq"]
            while words and hasattr(command, "commands") and re.match(r"^[a-z]+$", words[0]):
                sub = command.commands.get(words[0])
                if sub is None:
                    break
                command, path = sub, [*path, words.pop(0)]
            if words and hasattr(command, "commands") and re.match(r"^[a-z]+$", words[0]) \
                    and words[0] not in command.commands:
                wrong.append(f"{rel(page)}:{number}: `{code}`: no command {words[0]!r} "
                             f"in {' '.join(path)}")
                continue
            options = {opt for param in command.params
                       for opt in (*param.opts, *param.secondary_opts)}
            for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words)):
                if option not in options:
                    wrong.append(f"{rel(page)}:{number}: `{code}`: {' '.join(path)} has no "
                                 f"option {option}")
    assert seen > 40
    assert wrong == []


def bench_commands() -> list[tuple[str, list[str]]]:
    shown = [(where, args) for where, args in shown_commands("python") if args[:2] == ["-m", "bench"]]
    for page in PAGES:
        for number, code in inline_code(page):
            m = re.match(r"^(?:\S*/)?python -m bench( .*)?$", code)
            if m:
                shown.append((f"{rel(page)}:{number}", ["-m", "bench", *(m.group(1) or "").split()]))
    return [(where, args[2:]) for where, args in shown]


def test_every_python_m_bench_shown_names_a_scenario_and_its_options():
    from bench.__main__ import BENCHMARKS  # a dict of names: imports no benchmark

    shown = bench_commands()
    assert len(shown) > 15
    wrong = []
    for where, args in shown:
        if args[:1] == ["--own-cluster"]:  # any benchmark, on a cluster of its own
            args = args[1:]
        if not args or args[0] == "NAME":
            continue  # `python -m bench NAME`: the general form
        name, options = args[0], [a.split("=")[0] for a in args[1:] if a.startswith("--")]
        if name not in BENCHMARKS:
            wrong.append(f"{where}: no benchmark {name!r}")
            continue
        source = (ROOT / (BENCHMARKS[name].replace(".", "/") + ".py")).read_text()
        wrong += [f"{where}: python -m bench {name} has no option {option}"
                  for option in options if f'"{option}"' not in source]
    assert wrong == []


def test_every_dev_command_shown_is_one_of_the_scripts():
    known = set(re.findall(r"^  (\w+)\)$", (ROOT / "dev").read_text(), re.M))
    assert known == {"run", "test"}
    shown = [(where, args) for where, args in shown_commands("dev")]
    assert len(shown) >= 2
    assert [f"{where}: ./dev {' '.join(args)}" for where, args in shown
            if not args or args[0] not in known] == []
