"""Trained models in the store: named, versioned, checksummed file sets.

    models/<kind>/<name>/<version>/<file>...      immutable; version = sha256 of the files
    models/<kind>/<name>/<version>/model.json     {format, kind, name, version, files: {file: {bytes, sha256}}, meta}
    models/<kind>/<name>/current.json             {format, version}: what `name` means now

A model (a linear head, a static-vector classifier, a fine-tuned encoder, a checkpoint)
is whatever files its stage serialized (safetensors + JSON: never pickles) plus a meta
dict, e.g. the fingerprint of the features it was trained on. Files are written
atomically, model.json after them, current.json last, so a crash leaves the previous
version current; every read checks sizes and checksums. The store knows nothing of
what the files mean.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import manifest as mf
from .errors import CorruptShard, NotFound, did_you_mean
from .fs import StoreFS, check_name

MODEL_FORMAT = mf.Format("embcache.model", 1)              # models/<kind>/<name>/<version>/model.json
CURRENT_FORMAT = mf.Format("embcache.model_pointer", 1)     # models/<kind>/<name>/current.json


@dataclass(frozen=True)
class ModelInfo:
    kind: str          # "head", "static", "finetune", "checkpoint", ...
    name: str
    version: str       # 64 hex digits: sha256 over the files' names and checksums
    files: dict        # file name -> {"bytes", "sha256"}
    meta: dict
    created: str

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files.values())


class Models:
    """The store's models/ directory."""

    def __init__(self, fs: StoreFS):
        self.fs = fs

    def dir(self, kind: str, name: str, version: str | None = None) -> str:
        parts = ["models", check_name("model kind", kind), check_name("model", name)]
        return self.fs.path(*parts, version) if version else self.fs.path(*parts)

    def put(self, kind: str, name: str, files: dict[str, bytes], meta: dict | None = None) -> ModelInfo:
        """Save `files` as a new version of kind/name and make it current; returns its info."""
        if not files:
            raise ValueError("a model needs at least one file")
        listing = {}
        for file in sorted(files):
            if file in ("model.json", "current.json"):
                raise ValueError(f"{file} is the store's own listing name")
            check_name("model file", file.replace(".", "_").replace("-", "_").lower())
            listing[file] = {"bytes": len(files[file]), "sha256": hashlib.sha256(files[file]).hexdigest()}
        version = hashlib.sha256(mf.dump(listing)).hexdigest()
        where = self.dir(kind, name, version)
        info = ModelInfo(kind, name, version, listing, dict(meta or {}), mf.utcnow())
        if not self.fs.exists(f"{where}/model.json"):
            for file, data in files.items():
                self.fs.write_atomic(f"{where}/{file}", data)
            self.fs.write_atomic(f"{where}/model.json", mf.dump({
                **mf.header(MODEL_FORMAT), "kind": kind, "name": name, "version": version, "files": listing,
                "meta": info.meta, "created": info.created}))
        self.fs.write_atomic(f"{self.dir(kind, name)}/current.json",
                             mf.dump({**mf.header(CURRENT_FORMAT), "version": version, "updated": mf.utcnow()}))
        return self.info(kind, name, version)

    def current(self, kind: str, name: str) -> str:
        path = f"{self.dir(kind, name)}/current.json"
        if not self.fs.exists(path):
            known = ", ".join(self.names(kind)) or "none"
            raise NotFound(path, f"no {kind} named {name!r} (known: {known})")
        return mf.load(path, self.fs.read_bytes(path), CURRENT_FORMAT, "model pointer")["version"]

    def info(self, kind: str, name: str, version: str | None = None) -> ModelInfo:
        version = version or self.current(kind, name)
        path = f"{self.dir(kind, name, version)}/model.json"
        obj = mf.load(path, self.fs.read_bytes(path), MODEL_FORMAT, "model listing")
        return ModelInfo(kind, name, version, obj["files"], obj["meta"], obj["created"])

    def get(self, kind: str, name: str, version: str | None = None) -> tuple[dict[str, bytes], ModelInfo]:
        """Every file of the model (checked against its listing) and its info."""
        info = self.info(kind, name, version)
        where = self.dir(kind, name, info.version)
        mf.check_file_names(f"{where}/model.json", "model", list(info.files))
        files = {}
        for file, expect in info.files.items():
            path = f"{where}/{file}"
            data = self.fs.read_bytes(path)
            if len(data) != expect["bytes"]:
                raise CorruptShard(path, f"model file is {len(data)} bytes, its listing says {expect['bytes']} "
                                         "(truncated?)")
            actual = hashlib.sha256(data).hexdigest()
            if actual != expect["sha256"]:
                raise CorruptShard(path, f"model file checksum failed: sha256 {actual[:12]}… does not match its "
                                         f"listing's {expect['sha256'][:12]}… (bytes changed on disk)")
            files[file] = data
        return files, info

    def exists(self, kind: str, name: str) -> bool:
        return self.fs.exists(f"{self.dir(kind, name)}/current.json")

    def require(self, kind: str, name: str) -> None:
        """NotFound, naming the saved ones, unless a `kind` model `name` is saved."""
        if not self.exists(kind, name):
            names = self.names(kind) if self.fs.exists(self.fs.path("models", kind)) else []
            close = did_you_mean(name, names)
            saved = f"saved: {', '.join(names)}" if names else f"no {kind} is saved yet"
            raise NotFound(self.dir(kind, name), f"no saved {kind} named {name!r}"
                                                 + (f"; did you mean {close!r}?" if close else "") + f" ({saved})")

    def kinds(self) -> list[str]:
        return [k for k in self.fs.listdir(self.fs.path("models")) if self.fs.is_dir(self.fs.path("models", k))]

    def names(self, kind: str) -> list[str]:
        return [n for n in self.fs.listdir(self.fs.path("models", kind))
                if self.fs.exists(self.fs.path("models", kind, n, "current.json"))]

    def versions(self, kind: str, name: str) -> list[str]:
        return [v for v in self.fs.listdir(self.dir(kind, name)) if len(v) == 64]

    def list(self, kind: str | None = None) -> list[ModelInfo]:
        """The current version of every model (of one kind, or all)."""
        return [self.info(k, n) for k in ([kind] if kind else self.kinds()) for n in self.names(k)]
