"""Options bound to config dataclass fields: their defaults and choices come from the field.

    epochs: int = option(StaticConfig, "epochs", help="Most epochs (early stopping on validation loss).")

is `--epochs` with StaticConfig's default. For a `Literal[...]` field (or a tuple of them),
`annotate` (which cli/app.py's `Typer` runs on every command) gives the parameter that
Literal as its type, so typer offers exactly its values. The owner may be an instance
whose values are the defaults, e.g. `RunConfig.finetune` (compare's fine-tuning settings).
Each option keeps its `Binding` (`binding_of`), which tests/cli/test_options.py checks
against the configs for every command.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from functools import cache
from typing import Any, Literal, get_args, get_origin

import typer


@dataclass(frozen=True)
class Binding:
    """An option's config field."""
    owner: Any                  # a config dataclass, or an instance of one whose values are the defaults
    field: str
    # False: only the choices come from the field; the option is None unless given, because
    #   it overrides a config that has its own value (e.g. --runner over a run config's [runner])
    default_from_field: bool = True

    @property
    def config(self) -> type:
        return self.owner if isinstance(self.owner, type) else type(self.owner)

    @property
    def default(self) -> Any:
        if not self.default_from_field:
            return None
        if not isinstance(self.owner, type):
            return getattr(self.owner, self.field)
        f = _field(self.config, self.field)
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()
        raise TypeError(f"{self}: the field has no default to give an option")

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The Literal's values, for a Literal field or a tuple of Literals; else None."""
        return _literal_values(_field_type(self.config, self.field))

    def __str__(self) -> str:
        owner = self.config.__name__ if isinstance(self.owner, type) else f"{self.config.__name__}(…)"
        return f"{owner}.{self.field}"


def option(owner: Any, field: str, *flags: str, default_from_field: bool = True, **kwargs) -> Any:
    """typer.Option(<the field's default>, *flags, **kwargs), bound to `owner.field`."""
    binding = Binding(owner, field, default_from_field)
    info = typer.Option(binding.default, *flags, **kwargs)
    info.binding = binding
    return info


def argument(owner: Any, field: str, **kwargs) -> Any:
    """typer.Argument(<the field's default>, **kwargs), bound to `owner.field`."""
    binding = Binding(owner, field)
    info = typer.Argument(binding.default, **kwargs)
    info.binding = binding
    return info


def binding_of(parameter_default: Any) -> Binding | None:
    """The Binding of a command parameter's default (its typer.Option), or None if unbound."""
    return getattr(parameter_default, "binding", None)


def annotate(command):
    """Give every parameter bound to a Literal field that Literal as its type: typer's choices.

    Typer reads a parameter's choices from its annotation; this writes it from the field
    (the source says `str`, the values' type). A tuple of Literals becomes a list of a
    StrEnum made from the Literal, as typer takes no list of Literals.
    """
    target = inspect.unwrap(command)
    for name, param in inspect.signature(target).parameters.items():
        binding = binding_of(param.default)
        if binding is not None and binding.choices is not None:
            values = binding.choices
            multiple = get_origin(_field_type(binding.config, binding.field)) is tuple
            target.__annotations__[name] = list[_choice_enum(values)] if multiple else Literal[values]
    return command


def _field(config: type, name: str):
    if not is_dataclass(config):
        raise TypeError(f"{config!r} is not a config dataclass")
    for f in fields(config):
        if f.name == name:
            return f
    raise AttributeError(f"{config.__name__} has no field {name!r}")


def _field_type(config: type, name: str) -> Any:
    hint = _field(config, name).type
    if isinstance(hint, str):         # `from __future__ import annotations` in the config's module
        hint = eval(hint, vars(sys.modules[config.__module__]))
    return hint


def _literal_values(hint: Any) -> tuple[str, ...] | None:
    origin = get_origin(hint)
    if origin is Literal:
        return get_args(hint)
    if origin in (typing.Union, types.UnionType, tuple):     # X | None, tuple[X, ...]
        for arg in get_args(hint):
            values = _literal_values(arg)
            if values is not None:
                return values
    return None


@cache
def _choice_enum(values: tuple[str, ...]) -> type[enum.StrEnum]:
    return enum.StrEnum("Choice", [(v, v) for v in values])
