"""`--help` in click's conventions, which typer 0.29's own help left behind.

Typer 0.29 prints arguments as `{corpus}`, types as `<str>` / `<int>` / `<list[str]>` and
gives every flag a `<bool>` value. Click and most command lines print

    Usage: embcache ingest [OPTIONS] CORPUS SOURCES...
      --encoding TEXT     --max-bytes INTEGER     --format [auto|lines|csv]     --json

`ConventionalHelp` (mixed into every command and group of cli/app.py) does that at
help time: it swaps each typer parameter's class for the subclass below, which only
changes how the parameter is displayed, never how it parses.
"""

from __future__ import annotations

import re

from typer.core import TyperArgument, TyperOption

# typer's type labels -> click's metavars
_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "path": "PATH",
          "Path": "PATH", "file": "FILE", "directory": "DIRECTORY", "datetime": "DATETIME"}


def click_label(typer_label: str | None) -> str | None:
    """`<int>` -> INTEGER, `<a|b>` -> [a|b], `<list[str]>` -> TEXT, `<int range>` -> INTEGER RANGE."""
    if not typer_label:
        return typer_label
    label = typer_label[1:-1] if typer_label.startswith("<") and typer_label.endswith(">") else typer_label
    inner = re.fullmatch(r"list\[(.*)\]", label)
    label = inner.group(1) if inner else label
    if "|" in label:
        return f"[{label}]"
    if label.endswith(" range"):
        return f"{_NAMES.get(label[:-6], label[:-6].upper())} RANGE"
    return _NAMES.get(label, label.upper())


class Argument(TyperArgument):
    """A positional argument shown as CORPUS, [CONFIG] or SOURCES..."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx) -> str | None:
        return click_label(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


class Option(TyperOption):
    """An option shown with click's metavar (TEXT, INTEGER, [a|b]); a flag with none."""

    def display_type_rich(self, ctx) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        label = click_label(self.display_type(ctx))
        return label + "..." if self.nargs != 1 and label else label


class ConventionalHelp:
    """Mixed into a typer command or group: its parameters display in click's conventions."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if type(param) is TyperArgument:
                param.__class__ = Argument        # display-only subclasses: no state of their own
            elif type(param) is TyperOption:
                param.__class__ = Option
        return params
