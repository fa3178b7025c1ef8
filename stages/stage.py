"""What a stage is to the cache: what it writes, its code's version, and which config fields count.

    TOKENIZE = Stage("bert_tokens", version=1)
    TOKENIZE.spec(TokenizeConfig(), inputs={"documents": fp})    # -> the table's spec (its fingerprint)
    TRAIN_HEAD = Stage("train-head", version=1)
    TRAIN_HEAD.identity(HeadConfig(threads=1), features=fp, ...) # -> the run ledger's key

A config's fields are hashed as `pipeline.configs.output_fields` gives them: fields the
config declares speed-only (threads, batch sizes that change no value) are left out, so
tables and the run ledger agree on what changes a stage's output. Bump a stage's version
when its code's output changes for the same inputs and config.
"""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass
from typing import Any

from ..pipeline.configs import output_fields
from ..storage import fingerprint_of, spec


def hashed(config: Any) -> Any:
    """A config as stages hash it: a dataclass's output fields, anything else as it is."""
    return output_fields(config) if is_dataclass(config) and not isinstance(config, type) else config


@dataclass(frozen=True)
class Stage:
    name: str       # the table it writes; for a training stage, its name in the run ledger
    version: int    # bump when the output changes for the same inputs and config

    def spec(self, config: Any, inputs: dict | None = None, digests: dict | None = None) -> dict:
        """The spec (and so the fingerprint) of the table this stage writes."""
        return spec(self.name, self.version, hashed(config), inputs=inputs, digests=digests)

    def identity(self, config: Any = None, **inputs: Any) -> str:
        """sha256 of {stage, version, config's output fields, inputs}: a training stage whose
        identity matches its last run in a store is skipped and its stored result reused."""
        return fingerprint_of({"stage": self.name, "version": self.version, "config": hashed(config),
                               "inputs": inputs})
