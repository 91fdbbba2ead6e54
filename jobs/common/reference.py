"""The options reference of every command, as Markdown: ``python -m jobs.common.reference``.

Rendered from the commands' own argparse parsers (the ones ``--help`` prints), through argparse's
formatter hooks, so the reference lists the same options, groups, metavars, defaults and help as
``--help`` by construction. ``docs/reference/options.md`` is this module's output; a test compares
the two, so regenerate it after changing an option::

    python -m jobs.common.reference > docs/reference/options.md
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (command, console script, "module:function" returning its parser), in the order users meet them.
COMMANDS: tuple[tuple[str, str | None, str], ...] = (
    ("jobs.stylize", "stylize", "jobs.batch.settings:build_parser"),
    ("jobs.stylize_image", "stylize-image", "jobs.image.settings:build_parser"),
    ("jobs.catalog", "stylize-catalog", "jobs.catalog.settings:build_parser"),
    ("jobs.stylize_video", "stylize-video", "jobs.video.settings:build_parser"),
    ("jobs.train", "stylize-train", "jobs.train.settings:build_parser"),
    ("jobs.styles", None, "jobs.styles:build_parser"),
    ("jobs.submit", None, "jobs.submit:build_parser"),
)

HEADER = """# Options reference

Every command's options, generated from the same argparse parsers that print `--help` (so the two
agree). Do not edit by hand: after changing an option, run

```
python -m jobs.common.reference > docs/reference/options.md
```

Options of the Ray jobs can also be given in a YAML file (`--config FILE`): the keys are the flag
names with underscores (`max_error_rate: 0.05`, `style: {mosaic: s3://...}`); flags given on the
command line override the file.
"""


@dataclass
class Section:
    """One group of ``--help``: its title, text and options."""

    title: str | None
    text: list[str] = field(default_factory=list)
    actions: list[argparse.Action] = field(default_factory=list)


def parser_sections(parser: argparse.ArgumentParser) -> tuple[list[str], list[Section]]:
    """(text outside the groups: the description, then the epilog; the groups in ``--help`` order)."""
    texts: list[str] = []
    sections: list[Section] = []
    open_section: list[Section] = []  # the group format_help() is inside of, if any

    class Recorder(argparse.HelpFormatter):
        # format_help() drives these hooks in the order it prints; record instead of wrapping text.
        def add_usage(self, *args: Any, **kwargs: Any) -> None:
            pass

        def start_section(self, heading: str | None) -> None:
            sections.append(Section(heading))
            open_section[:] = [sections[-1]]

        def add_text(self, text: str | None) -> None:
            if text and text is not argparse.SUPPRESS:
                (open_section[0].text if open_section else texts).append(text)

        def add_arguments(self, actions: Any) -> None:
            sections[-1].actions.extend(a for a in actions if a.help is not argparse.SUPPRESS)

        def end_section(self) -> None:
            open_section.clear()

    original = parser.formatter_class
    parser.formatter_class = Recorder
    try:
        parser.format_help()
    finally:
        parser.formatter_class = original
    return texts, sections


def invocation(action: argparse.Action) -> str:
    """How the option is written: ``-o OUT, --output OUT``, ``--json``, ``IN [IN ...]``."""
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    if not action.option_strings:
        return f"{metavar} [{metavar} ...]" if action.nargs == "+" else str(metavar)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    return ", ".join(f"{flag} {metavar}" for flag in action.option_strings)


def help_text(action: argparse.Action, prog: str) -> str:
    """The option's help as ``--help`` expands it, with a default argparse holds but the text omits."""
    text = " ".join((action.help or "").split())
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    shown = action.default not in (None, argparse.SUPPRESS, False, [], "")
    if shown and action.nargs != 0 and "default" not in text:
        text += f" (default: {action.default})"
    return text


def render_command(command: str, script: str | None, parser: argparse.ArgumentParser) -> str:
    """One command's Markdown: title, how to call it, its text, then one list per option group."""
    texts, sections = parser_sections(parser)
    lines = [f"## {command}", ""]
    call = f"`python -m {command}`" + (f" (console script `{script}`)" if script else "")
    lines += [call, ""]
    if parser.usage:  # a usage written by hand says what argparse cannot (jobs.submit's `-- COMMAND`)
        lines += ["```", "usage: " + parser.usage % {"prog": parser.prog}, "```", ""]
    for text in texts:  # the description: prose
        if text != parser.epilog:
            lines += [text.strip("\n"), ""]
    for section in sections:
        if not section.actions:
            continue
        lines += [f"### {command}: {section.title}", ""]
        lines += [f"- `{invocation(a)}`: {help_text(a, parser.prog)}" for a in section.actions]
        lines.append("")
    for text in texts:  # the epilog: examples, kept as written
        if text == parser.epilog:
            lines += ["```", text.strip("\n"), "```", ""]
    return "\n".join(lines)


def load_parser(target: str) -> argparse.ArgumentParser:
    module, _, name = target.partition(":")
    build: Callable[[], argparse.ArgumentParser] = getattr(importlib.import_module(module), name)
    return build()


def render() -> str:
    """The whole reference: a header, a contents list and every command."""
    contents = [f"- [`{command}`](#{command.replace('.', '')})" for command, _, _ in COMMANDS]
    body = [render_command(command, script, load_parser(target)) for command, script, target in COMMANDS]
    return HEADER + "\n" + "\n".join(contents) + "\n\n" + "\n".join(body).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
