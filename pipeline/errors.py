"""Named errors of the compute stages. Each names where (file, row when known) and why."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: `where` (a file, a file:row, a model path) and `reason`."""

    def __init__(self, where: str, reason: str):
        self.where = str(where)
        self.reason = reason
        super().__init__(f"{self.where}: {reason}")


class SourceSchemaError(PipelineError):
    """A source lacks a configured column (fails fast, listing the columns it has)."""


class IngestOptionError(PipelineError):
    """An ingest option that would have no effect with these sources (labels and no label)."""


class SourceNotFound(PipelineError):
    """A source path or glob that matches no file."""


class ModelLoadError(PipelineError):
    """A model that cannot be loaded safely (no safetensors weights, remote code, missing files)."""


class SourceUnavailable(PipelineError):
    """A source in an object store that cannot be listed or read: its filesystem is not
    installed (the error names the extra), credentials or the endpoint are missing, access denied."""
