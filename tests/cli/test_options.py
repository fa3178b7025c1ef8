"""Every option bound to a config field has that field's default and, for a Literal, exactly its
choices; every other option with a default of its own is listed, with why, in CLI_ONLY."""

import enum
import inspect
import typing
from dataclasses import MISSING, fields

import pytest

import embcache.cli
from embcache.cli.options import binding_of
from embcache.flows.run_config import RunConfig
from embcache.pipeline.configs import FinetuneConfig, HeadConfig, StaticConfig

from .test_app import commands

# Options whose default is the CLI's own: no config dataclass holds it. (command, parameter)
CLI_ONLY = {
    ("gc", "grace"): "seconds a file must have aged before gc removes it: a commit may be in flight",
    ("query sql", "fmt"): "output format (table, json, csv)",
    ("query sql", "limit"): "rows printed in table format",
    ("query features", "column"): "the vector column --format npy writes",
    ("query features", "fmt"): "output format (json, npy, parquet)",
    ("query similar", "k"): "hits printed",
    ("query neighbours", "k"): "hits printed",
    ("query neighbors", "k"): "hits printed (an alias of query neighbours)",
    ("index", "column"): "the vector column indexed (like query features --column)",
    ("evaluate word2vec", "restrict_vocab"): "an argument of stages.word2vec_eval.evaluate, no config's field",
    ("export vectors", "fmt"): "output format; its choices are stages.word2vec_eval.EXPORT_FORMATS",
    ("finetune", "name"): "finetune_flow's model name; the run config has no finetune section",
    ("compare", "fmt"): "output format (auto: a table in a terminal, Markdown when piped; table; markdown)",
}
TRIVIAL = (None, False, (), [])      # "not given" defaults: nothing to keep in step with a config


def parameters():
    """(command, click parameter, its typer.Option/Argument) of every command, the root's included."""
    for path, command in commands():
        signature = inspect.signature(command.callback) if command.callback else None
        for p in command.params:
            info = signature.parameters[p.name].default if signature and p.name in signature.parameters else None
            yield " ".join(path), p, info


def field_default(owner, name):
    if not isinstance(owner, type):
        return getattr(owner, name)
    f = next(f for f in fields(owner) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def field_choices(config, name):
    hint = typing.get_type_hints(config)[name]
    while typing.get_origin(hint) is not typing.Literal and typing.get_args(hint):   # X | None, tuple[X, ...]
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def plain(value):
    """Enum members and lists as the plain values and tuples a config holds."""
    if isinstance(value, (list, tuple)):
        return tuple(map(plain, value))
    return value.value if isinstance(value, enum.Enum) else value


BOUND = [(c, p, binding_of(i)) for c, p, i in parameters() if binding_of(i) is not None]


@pytest.mark.parametrize("command, param, binding", BOUND, ids=[f"{c} {p.name}" for c, p, _ in BOUND])
def test_a_bound_option_has_its_fields_default_and_choices(command, param, binding):
    expected = field_default(binding.owner, binding.field) if binding.default_from_field else None
    assert plain(param.default) == plain(expected), f"{command} --{param.name}: default is not {binding}'s"
    choices = param.type_descriptor.choices
    assert (plain(choices) if choices is not None else None) == field_choices(binding.config, binding.field), \
        f"{command} --{param.name}: choices are not {binding}'s"


def test_every_other_default_is_a_listed_cli_only_one():
    unbound = {(c, p.name): p.default for c, p, info in parameters() if binding_of(info) is None}
    own = {key for key, default in unbound.items() if default not in TRIVIAL}
    assert own <= set(CLI_ONLY), f"bind these to a config field or list them in CLI_ONLY: {sorted(own - set(CLI_ONLY))}"
    assert set(CLI_ONLY) <= own, f"CLI_ONLY lists what is bound, gone or trivial now: {sorted(set(CLI_ONLY) - own)}"


def test_the_defaults_that_had_drifted_are_the_configs_now():
    """train static had --epochs 20 --lr 3e-3, train head --batch-size 512; compare's fine-tuning is the run's."""
    params = {(c, p.name): p.default for c, p, _ in parameters()}
    assert (params["train static", "epochs"], params["train static", "lr"]) == (StaticConfig.epochs, StaticConfig.lr)
    assert params["train head", "batch_size"] == HeadConfig.batch_size
    assert params["compare", "unfreeze_epochs"] == RunConfig.finetune.unfreeze_epochs != FinetuneConfig.unfreeze_epochs


def test_no_enum_copies_of_choices_in_the_cli():
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(embcache.cli.__path__):
        module = importlib.import_module(f"embcache.cli.{m.name}")
        enums = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, enum.Enum)
                 and v.__module__ == module.__name__]
        assert not enums, f"{module.__name__} defines {enums}: take choices from the config's Literal"
