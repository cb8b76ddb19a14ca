"""The docs match the CLIs: docs/cli.md is what scripts/gen_cli_docs.py generates now, and every command line in
the docs' code blocks names a real subcommand and only options that subcommand has."""

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}
YAML_FENCES = {"yaml", "yml"}
INLINE = re.compile(r"`((?:react-index|react-tune|react-eval|python3? -m react_\w+\.cli)\b[^`]*)`")
PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
WRAPPERS = {"sudo", "time", "nohup", "exec", "env", "command"}
SEPARATORS = {";", "&", "&&", "|", "||", "(", ")", "|&"}
REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "<&", "&>", "&>>", ">|"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def clis():
    return gen.load_clis()


# --- docs/cli.md --------------------------------------------------------------------------------------------


def test_cli_reference_is_generated_and_current(clis):
    current = (ROOT / "docs" / "cli.md").read_text() if (ROOT / "docs" / "cli.md").exists() else ""
    assert current == gen.render(clis), "docs/cli.md is stale: run `python3 -m nox -s docs` (scripts/gen_cli_docs.py)"


def test_cli_reference_does_not_depend_on_what_ran_before(clis):
    """click caches a command's help option with the first context's names; a subcommand invoked on its own first
    (as some tests do) must not turn its documented `-h`, `--help` into `--help`."""
    commands = [command for group in clis.values() for command in group.commands.values()]
    try:
        for command in commands:
            command._help_option = None  # as if nothing had asked yet (private: the cache this test is about)
            command.get_help_option(click.Context(command))  # a standalone invocation caches `--help` alone
        assert '`-h`, `--help`' in gen.render(clis)
        assert (ROOT / "docs" / "cli.md").read_text() == gen.render(clis)
    finally:
        for command in commands:  # leave no poisoned cache to the tests that run next in this process
            command._help_option = None


def test_cli_reference_covers_every_command_and_option(clis):
    text = gen.render(clis)
    assert text.startswith(gen.HEADER)
    for prog, group in clis.items():
        for command, ctx in gen.walk(group, gen.root_context(prog, group)):
            assert f"`{ctx.command_path}`" in text
            for param in command.get_params(ctx):
                for flag in getattr(param, "opts", []) if isinstance(param, click.Option) and not param.hidden else []:
                    assert f"`{flag}`" in text, (ctx.command_path, flag)


# --- command lines in the docs ------------------------------------------------------------------------------


@dataclass
class Invocation:
    where: str  # file:line
    prog: str  # react-index, react-tune or react-eval
    args: list[str]  # the words after the program


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join backslash-continued lines; each result keeps the number of its first line."""
    joined, start, parts = [], None, []
    for number, line in lines:
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        joined.append((start, " ".join([*parts, line])))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, shell command) for every command in the text's code blocks: shell-like fences (one command per
    logical line), YAML fences (the GitHub Actions `run:` values), and inline code that starts with a tool."""
    found, fence, block = [], None, []
    run_block_indent = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = re.match(r"\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None:
            if opening:
                fence, lang, block, run_block_indent = opening.group(1), opening.group(2).lower(), [], None
            else:  # inline code in prose that starts with a tool, a synopsis such as `react-x cmd A|B [--opt N]`
                found += [(number, re.sub(r"[][|]", " ", span)) for span in INLINE.findall(line)]
            continue
        if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
            if lang in SHELL_FENCES or run_block_indent is not None:
                found += _logical_lines(block)
            fence = None
            continue
        if lang in SHELL_FENCES:
            block.append((number, re.sub(r"^\s*\$ ", "", line)))
        elif lang in YAML_FENCES:
            indent = len(line) - len(line.lstrip())
            if run_block_indent is not None and (not line.strip() or indent > run_block_indent):
                block.append((number, line))
                continue
            if run_block_indent is not None:
                found += _logical_lines(block)
                run_block_indent, block = None, []
            run = re.match(r"\s*(?:-\s+)?run:\s*(.*)$", line)
            if not run:
                continue
            value = run.group(1).strip()
            if value[:1] in ("|", ">"):  # a multi-line script: the more-indented lines that follow
                run_block_indent, block = indent, []
            elif value:
                if value[0] in "'\"" and value[-1] == value[0]:
                    value = value[1:-1]
                found.append((number, value))
    return found


def _words(command: str) -> list[str]:
    """Shell words, with `#` comments dropped and operators (; && | > …) as words of their own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes, e.g. prose in a plain fence
        return re.sub(r"(^|\s)#.*", "", command).split()


def _program(words: list[str]) -> tuple[str | None, list[str]]:
    """The react tool a simple command runs (as its script, `python -m react_x.cli`, or `torchrun -m react_x.cli`),
    and its arguments; (None, []) for anything else."""
    i = 0
    while i < len(words) and (words[i] in WRAPPERS or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i])):
        i += 1
    if i == len(words):
        return None, []
    name = words[i].rsplit("/", 1)[-1]
    if name in gen.CLIS:
        return name, words[i + 1:]
    if PYTHON.fullmatch(name) or name == "torchrun":
        if "-m" in words[i + 1:]:
            m = words.index("-m", i + 1)
            module = words[m + 1] if m + 1 < len(words) else ""
            for prog, target in gen.CLIS.items():
                if module in (target.split(":")[0], target.split(".")[0]):
                    return prog, words[m + 2:]
    return None, []


def invocations(text: str, filename: str) -> list[Invocation]:
    """Every invocation of react-index, react-tune or react-eval in the text's code blocks."""
    found = []
    for number, line in command_lines(text):
        simple = []
        for word in [*_words(line), ";"]:
            if word in SEPARATORS:
                prog, args = _program(simple)
                if prog:
                    found.append(Invocation(f"{filename}:{number}", prog, args))
                simple = []
            else:
                simple.append(word)
    return found


def _redirect(word: str) -> bool:
    return word in REDIRECTS or bool(re.fullmatch(r"\d*[<>]+&?\d*", word))


def check(invocation: Invocation, clis: dict[str, click.Command]) -> list[str]:
    """Problems with one invocation: an unknown subcommand, or an option its (sub)command does not have."""
    command = clis[invocation.prog]
    ctx = gen.root_context(invocation.prog, command)
    args = list(invocation.args)
    problems = []
    while args:
        word = args.pop(0)
        if word == "--" or _redirect(word):
            break
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-[\d.]+", word):
            name = word.split("=", 1)[0]
            option = next((p for p in command.get_params(ctx) if isinstance(p, click.Option)
                           and name in (*p.opts, *p.secondary_opts)), None)
            if option is None:
                problems.append(f"{invocation.where}: `{ctx.command_path}` has no option {name}")
            elif option.hidden:  # a deprecated spelling (vendor/cliopts.py): the docs teach the new one
                problems.append(f"{invocation.where}: `{ctx.command_path}` {name} is a deprecated spelling "
                                f"({option.help})")
            if option is None:
                pass
            elif not option.is_flag and not option.count and "=" not in word:
                del args[:option.nargs]  # its value(s)
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, word)
            if sub is None:
                problems.append(f"{invocation.where}: `{ctx.command_path}` has no subcommand {word!r}")
                break
            command, ctx = sub, click.Context(sub, info_name=word, parent=ctx, **sub.context_settings)
    return problems


def check_text(text: str, filename: str, clis: dict[str, click.Command]) -> tuple[list[Invocation], list[str]]:
    found = invocations(text, filename)
    return found, [problem for invocation in found for problem in check(invocation, clis)]


def test_documented_commands_use_real_subcommands_and_options(clis):
    found, problems = [], []
    for path in DOCS:
        f, p = check_text(path.read_text(), str(path.relative_to(ROOT)), clis)
        found += f
        problems += p
    assert not problems, "documented commands that the CLIs reject:\n" + "\n".join(problems)
    # the check saw the docs' commands: every tool, and the quickstart's chain
    assert {i.prog for i in found} == set(gen.CLIS)
    assert any(i.where.startswith("docs/quickstart.md") for i in found)


def test_checker_reports_bogus_options_and_subcommands(clis):
    text = "\n".join([
        "Prose mentioning react-index --nothing is no command; inline `react-index info PATH [--bogus]` is one.",
        "```bash",
        "react-index query --index i --classes c --out o --no-such-flag   # a comment --not-checked",
        "react-index frobnicate --out x",
        "react-tune train m.parquet --model ViT-B-32 \\",
        "    --out ckpt --stepz 10",
        "echo hi && python -m react_eval.cli run --model m --out r --bogus=1 > log.txt",
        "torchrun --nproc_per_node 8 -m react_index.cli embed 'a/{0..9}.tar' --out s --workers 6 --wrokers 2",
        "react-eval --version",
        "react-index build --help",
        "react-eval compare a b --max-drop 0.5 --json",
        "```",
        "```yaml",
        "steps:",
        "  - run: react-eval report results --out r.html --pdf",
        "  - run: |",
        "      react-eval run --model m --out r",
        "      react-tune export ckpt --merged out --zip",
        "```",
    ])
    found, problems = check_text(text, "snippet.md", clis)
    assert len(found) == 12
    assert problems == [
        "snippet.md:1: `react-index info` has no option --bogus",
        "snippet.md:3: `react-index query` has no option --no-such-flag",
        "snippet.md:4: `react-index` has no subcommand 'frobnicate'",
        "snippet.md:5: `react-tune train` has no option --stepz",
        "snippet.md:7: `react-eval run` has no option --bogus",
        "snippet.md:8: `react-index embed` has no option --wrokers",
        "snippet.md:15: `react-eval report` has no option --pdf",
        "snippet.md:18: `react-tune export` --merged is a deprecated spelling (Deprecated: use --out.)",
        "snippet.md:18: `react-tune export` has no option --zip",
    ]
