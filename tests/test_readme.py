"""README.md stays true: every command line it shows parses with the real argument parser of that command (parse
only, nothing runs), and every document it links to exists in the repository.

Commands are taken from the README's ``bash`` blocks (continuation lines joined, comments dropped) and from its
inline code spans that start with a command name. Placeholders stay as they are (DATA, CKPT, globs); ``...``
marks an elided part, so a command that contains it may lack required arguments, but every flag it shows must
still be one the command accepts. ``[-o pngs/]`` (an optional part) is parsed with its content; a bracketed part
in words (``[more run dirs]``) is dropped.
"""
import contextlib
import io
import os
import re
import shlex

import pytest

from kd_plugin.cli.compress_classifier import build_parser as compress_classifier_parser
from kd_plugin.cli.compress_classifier import build_spec_parser
from kd_plugin.cli.kd_plugin import build_parser as kd_plugin_parser
from kd_plugin.cli.main_kd_cifar10 import build_parser as main_kd_cifar10_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PARSERS = {"compress_classifier": compress_classifier_parser, "kd-plugin": kd_plugin_parser,
           "main_KD_CIFAR10": main_kd_cifar10_parser}
MODULES = {"kd_plugin": "kd-plugin", "kd_plugin.compress_classifier": "compress_classifier",
           "kd_plugin.main_kd_cifar10": "main_KD_CIFAR10"}


def readme():
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def shell_lines(text):
    """(line, partial) for the README's bash blocks (continuations joined) and inline command spans, which
    are partial: a span names a command and some of its flags, not a whole command line."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append((line.strip(), False))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:compress_classifier|kd-plugin|main_KD_CIFAR10) [^`]+)`", prose):
        lines.append((span, True))
    return [(line, partial) for line, partial in lines if line and not line.startswith("#")]


def command_of(line, partial=False):
    """(command, arguments, partial) of a README line for one of kd-plugin's commands, or None otherwise."""
    line = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1) if m.group(1).startswith("-") else "", line)
    words = shlex.split(line, comments=True)
    if words and words[0] == "torchrun":
        words = words[next(i for i, w in enumerate(words) if not w.startswith("--")):]  # the options end
        words = ["python", *words]
    if len(words) > 2 and words[0] in ("python", "python3") and words[1] == "-m":
        if words[2] not in MODULES:
            return None
        words = [MODULES[words[2]], *words[3:]]
    if not words or words[0] not in PARSERS:
        return None
    return words[0], words[1:], partial or "..." in words


COMMANDS = [found for found in (command_of(*line) for line in shell_lines(readme())) if found is not None]
# What a partial command (elided, or an inline mention) may lack; an unknown flag or a bad value still fails.
INCOMPLETE = ("the following arguments are required", "expected one argument")


def test_the_readme_shows_each_command():
    shown = {name for name, _, partial in COMMANDS if not partial}
    assert shown == set(PARSERS) and len(COMMANDS) >= 60


@pytest.mark.parametrize("name, argv, partial", COMMANDS, ids=[" ".join([n, *a])[:80] for n, a, _ in COMMANDS])
def test_every_readme_command_line_parses(name, argv, partial):
    argv = [word for word in argv if word != "..."]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        if name == "compress_classifier" and argv[:1] == ["--spec"]:  # main() routes a spec file the same way
            build_spec_parser().parse_args(argv)
            return
        args = PARSERS[name]().parse_args(argv)
        if name == "kd-plugin" and args.command == "train-jointnet":  # the rest goes to compress_classifier
            compress_classifier_parser().parse_args(args.compress_args)
        return
    message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "exited"
    if partial and any(reason in message for reason in INCOMPLETE):
        return  # an elided example or an inline mention: every flag it shows was accepted
    pytest.fail(f"{name} {' '.join(argv)}: {message}")


def test_every_document_the_readme_links_exists():
    text = readme()
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    cited = set(re.findall(r"\]\(((?!https?:)[^)#\s]+)", prose))  # Markdown links to files of the repository
    cited |= set(re.findall(r"`((?:docs|tests|benchmarks|schedules|kd_plugin)/[\w./-]+\.(?:md|py|yaml))`", text))
    missing = sorted(path for path in cited if not os.path.exists(os.path.join(ROOT, path)))
    assert not missing
    assert os.path.isfile(os.path.join(ROOT, "docs", "DESIGN.md"))
