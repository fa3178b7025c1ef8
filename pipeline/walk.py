"""Finding a source's files under directories and globs, following symbolic links safely.

A link to a directory is followed unless the directory it leads to was already walked
(a link back to a parent, two links to one place): that link is reported as a
`link_loop` instead, so a walk always finishes and reads each directory once. A file
reached by several paths (a link beside its target) is read once, under its own path
when it has one. A link that leads nowhere (its target is missing, or it points to
itself) is reported as a `broken_link`: the caller turns each report into a rejected row.

    >>> walk(["corpus"])                                         # doctest: +SKIP
    [[Found(path='corpus/a.txt', problem=None),
      Found(path='corpus/sub/again', problem=('link_loop', 'links to /…/corpus, a folder already walked: skipped'))]]
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
from typing import NamedTuple


class Found(NamedTuple):
    path: str                              # as reached from the top given (never resolved)
    problem: tuple[str, str] | None = None  # (reject reason, detail) for a path that is not read


def hidden(name: str) -> bool:
    return name.startswith(".")


def walk(tops: list[str]) -> list[list[Found]]:
    """Per top directory, its non-hidden files (sorted) and reports, walking every top's own
    tree before any linked directory, so a real path always wins over a link to it.

    Directories and files are told apart by (device, inode), one stat each: cheaper than
    resolving every path, and two names of one file (a link, a hard link) count once."""
    seen_dirs = {_identity(os.stat(t or ".")) for t in tops}
    found: list[list[Found]] = [[] for _ in tops]
    files: dict[tuple, tuple[bool, str, int]] = {}  # identity -> (is a link?, path, top): the best name wins
    pending = [(i, t) for i, t in enumerate(tops)]  # real directories to list
    links: list[tuple[int, str, tuple]] = []       # directory links, followed after every real tree
    while pending or links:
        if pending:
            i, directory = pending.pop()
        else:
            i, directory, identity = links.pop(0)
            if identity in seen_dirs:
                found[i].append(Found(directory, ("link_loop", f"links to {os.path.realpath(directory)}, a folder "
                                                               "already walked: skipped (each file is read once)")))
                continue
            seen_dirs.add(identity)
        try:
            entries = sorted(os.scandir(directory or "."), key=lambda e: e.name)
        except OSError:
            continue          # an unlistable directory: as os.walk and glob do
        for entry in entries:
            if hidden(entry.name):
                continue
            path = os.path.join(directory, entry.name)
            if _broken(entry):
                found[i].append(Found(path, broken_link(path)))
            elif entry.is_dir():
                identity = _identity(entry.stat())
                if entry.is_symlink():
                    links.append((i, path, identity))
                elif identity not in seen_dirs:
                    seen_dirs.add(identity)
                    pending.append((i, path))
            elif entry.is_file():
                identity, candidate = _identity(entry.stat()), (entry.is_symlink(), path, i)
                if identity not in files or candidate < files[identity]:
                    files[identity] = candidate
    for _, path, i in files.values():
        found[i].append(Found(path))
    return [sorted(f) for f in found]


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _broken(entry: os.DirEntry) -> bool:
    """A link that leads to no file or folder (missing target, or a loop of links)."""
    try:
        return entry.is_symlink() and not (entry.is_dir() or entry.is_file())
    except OSError:            # ELOOP: is_dir/is_file only swallow "no such file"
        return True


def broken_link(path: str) -> tuple[str, str]:
    """("broken_link", why) for a link that cannot be read."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "broken_link", f"symbolic link loop: {path} points to itself (directly or through other links)"
        target = os.readlink(path) if os.path.islink(path) else path
        return "broken_link", f"broken symbolic link: its target {target!r} does not exist ({e.strerror})"
    return "broken_link", "symbolic link that is neither a file nor a folder"


def glob_files(pattern: str) -> list[Found]:
    """The non-hidden files (and broken links) matching a glob. A "**" pattern is matched
    against a link-safe walk of its literal directory instead of glob.glob, which follows
    links in circles (each cycle multiplies the paths, two never finish)."""
    if "**" not in pattern:     # a fixed depth: glob cannot loop
        out, seen = [], set()
        for p in sorted(p for p in glob.glob(pattern) if not hidden(os.path.basename(p))):
            if os.path.isfile(p):
                if os.path.realpath(p) not in seen:
                    seen.add(os.path.realpath(p))
                    out.append(Found(p))
            elif os.path.islink(p) and not os.path.isdir(p):
                out.append(Found(p, broken_link(p)))
        return out
    parts = pattern.replace(os.sep, "/").split("/")
    literal = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    top = "/".join(parts[:literal]) or ("/" if literal else "")
    rest = [part for part in parts[literal:] if part]
    if not os.path.isdir(top or "."):
        return []
    out = []
    for f in walk([top])[0]:
        relative = os.path.relpath(f.path, top or ".").replace(os.sep, "/").split("/")
        if (f.problem and f.problem[0] == "link_loop") or matches(relative, rest):
            out.append(f)
    return out


def matches(parts: list[str], pattern: list[str]) -> bool:
    """Does a relative path (as parts) match a glob (as parts, "**" = any number of folders)?

    >>> matches(["a", "b", "c.txt"], ["**", "*.txt"]), matches(["c.txt"], ["*", "*.txt"])
    (True, False)
    """
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(matches(parts[k:], pattern[1:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and matches(parts[1:], pattern[1:])
