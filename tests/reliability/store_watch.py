"""Watch a store directory from outside the writer: inotify on every directory under it.

The fault tests kill a real `embcache` process at points they see happen in the store
(a shard's temp file appears, a shard is renamed into place, a manifest is replaced),
not at hooks inside the product code. Events are named by what they mean:

    shard_tmp:bert_features      a shard's temp file was created (the shard is being written)
    shard:bert_features          a shard was renamed into place (written, not yet listed)
    manifest_tmp:bert_features   the table's next manifest is being written
    manifest:bert_features       a commit is done: the manifest was replaced
    snapshot_tmp / snapshot / corpus_manifest_tmp / corpus_manifest   the same for a corpus

Files already there when the watch starts are not events. A directory made later is
watched as soon as its creation is read; files already in it by then are reported as
if they had just arrived (a temp file renamed before that is missed).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")       # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc = ctypes.CDLL(None, use_errno=True)


def event_name(rel: str, created: bool) -> str | None:
    """What a new file at `rel` (store-relative) means, or None if it does not matter here."""
    parts = rel.split("/")
    base = parts[-1]
    tmp = base.startswith(".tmp-")
    if parts[0] == "tables" and len(parts) >= 4:
        table = parts[1]
        if len(parts) == 5 and parts[3] == "shards":
            if tmp and created:
                return f"shard_tmp:{table}"
            if not tmp and base.startswith("part-"):
                return f"shard:{table}"
        if len(parts) == 4 and base.endswith("manifest.json"):
            if tmp and created:
                return f"manifest_tmp:{table}"
            if not tmp:
                return f"manifest:{table}"
    if parts[0] == "corpora" and len(parts) >= 3:
        if len(parts) == 4 and parts[2] == "snapshots":
            if tmp and created:
                return "snapshot_tmp"
            if not tmp:
                return "snapshot"
        if len(parts) == 3 and base.endswith("manifest.json"):
            if tmp and created:
                return "corpus_manifest_tmp"
            if not tmp:
                return "corpus_manifest"
    return None


class StoreWatch:
    """inotify over a store root (which must exist); read() returns the named events since last time."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dirs: dict[int, Path] = {}
        self.seen: set[str] = set()
        self._pending: list[str] = []
        self._add(self.root)
        self._pending.clear()                                 # what was there before is no event

    def _add(self, path: Path) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CREATE | IN_MOVED_TO)
        if wd < 0:                                           # gone already (a temp directory): fine
            return
        self.dirs[wd] = path
        for entry in sorted(os.scandir(path), key=lambda e: e.name):   # arrived before the watch
            self._arrived(Path(entry.path), entry.is_dir(follow_symlinks=False), created=True)

    def _arrived(self, path: Path, is_dir: bool, created: bool) -> None:
        if is_dir:
            if path not in self.dirs.values():
                self._add(path)
            return
        rel = path.relative_to(self.root).as_posix()
        if not path.name.endswith("manifest.json"):           # uuid names arrive once: the scan and the
            key = f"{'c' if created else 'm'}:{rel}"         # event may both have seen this one
            if key in self.seen:
                return
            self.seen.add(key)
        name = event_name(rel, created)
        if name is not None:
            self._pending.append(name)

    def read(self) -> list[str]:
        """Named events since the last call (non-blocking; select() on .fd to wait)."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size: offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                if wd in self.dirs and name:
                    self._arrived(self.dirs[wd] / os.fsdecode(name), bool(mask & IN_ISDIR),
                                  created=bool(mask & IN_CREATE))
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        os.close(self.fd)


def commit_of(event: str) -> str:
    """The event that completes the commit `event` belongs to (itself for a completed commit)."""
    kind, _, table = event.partition(":")
    if table:
        return f"manifest:{table}"
    return "corpus_manifest" if event.startswith(("snapshot", "corpus_manifest")) else event


@dataclass(frozen=True)
class Trigger:
    """When to SIGKILL: at the nth `event`, then `delay` seconds later.

    `event` is a store event name or "log:TEXT" (the process printed TEXT). The nth event
    of a commit in progress (shard_tmp:T, shard:T, manifest_tmp:T, snapshot, …) is the one
    of the nth commit: the first seen after n-1 completed commits. So a temp file renamed
    before its new directory was watched shifts no count."""
    event: str
    nth: int = 1
    delay: float = 0.0


@dataclass
class Watched:
    code: int                                   # exit status: -9 when our SIGKILL ended it
    events: list[tuple[float, str]]             # (seconds since spawn, event name)
    started: float                              # time.monotonic() at spawn
    ended: float
    killed_after: str | None = None             # the trigger that fired, if it killed the process
    marks: dict[str, float] = field(default_factory=dict)   # log text -> seconds since spawn it appeared

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL

    def counts(self) -> Counter:
        return Counter(name for _, name in self.events)

    def first(self, event: str) -> float:
        return next(t for t, name in self.events if name == event)


def run_watched(spawn, store: Path, trigger: Trigger | None = None, marks: tuple[str, ...] = (),
                timeout: float = 300) -> Watched:
    """spawn() a process (a forkserver.Child) writing to `store`; SIGKILL it at `trigger`; wait
    for its end. `marks`: texts of its output whose first appearance to time."""
    watch = StoreWatch(store)
    child = spawn()
    t0 = time.monotonic()
    events, done, seen_at, kill_at, fired = [], Counter(), {}, None, None
    looking = set(marks) | ({trigger.event[4:]} if trigger and trigger.event.startswith("log:") else set())
    try:
        while True:
            now = time.monotonic()
            if now - t0 > timeout:
                child.kill()
                raise TimeoutError(f"{' '.join(child.args)} ran over {timeout:.0f} s:\n{child.output()[-3000:]}")
            wait = 0.02 if looking else 1.0
            if kill_at is not None:
                wait = max(0.0, min(wait, kill_at - now))
            ready = select.select([watch.fd, child.pidfd], [], [], wait)[0]
            now = time.monotonic()
            for name in watch.read():
                events.append((round(now - t0, 4), name))
                if commit_of(name) == name:
                    done[name] += 1
                nth = done[name] if commit_of(name) == name else done[commit_of(name)] + 1
                if trigger and kill_at is None and name == trigger.event and nth == trigger.nth:
                    kill_at, fired = now + trigger.delay, f"{name}#{nth}+{trigger.delay:.3f}s"
                    if trigger.delay == 0:
                        child.kill()                       # inside the commit the event announces
            if looking:
                output = child.output()
                for text in [t for t in looking if t in output]:
                    looking.discard(text)
                    seen_at[text] = round(now - t0, 4)
                    if trigger and trigger.event == f"log:{text}" and kill_at is None:
                        kill_at, fired = now + trigger.delay, f"log:{text}+{trigger.delay:.3f}s"
            if kill_at is not None and now >= kill_at:
                child.kill()
            if child.pidfd in ready:
                break
    finally:
        watch.close()
    code = child.wait(60)
    return Watched(code, events, child.started, child.ended or time.monotonic(),
                   fired if code == -signal.SIGKILL else None, seen_at)
