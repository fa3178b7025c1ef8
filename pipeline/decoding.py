"""Text encodings of source files: how `datasets` reads them, and each record's decoding.

Most encodings (UTF-8, the default; cp1252, latin-1, shift_jis... ) write ASCII as ASCII, so
"\\n", "\\r" and CSV/JSON syntax are the same bytes in every one of them. Such files are read
by `datasets` as Latin-1 (a lossless byte <-> character mapping that never fails) and each
record's bytes are decoded here, so one bad line costs that line only:

    >>> decode_field("text", "caf\\xc3\\xa9", None)
    ('café', None)
    >>> decode_field("text", "caf\\xe9", "cp1252")
    ('café', None)

UTF-16 and UTF-32 do not (a newline is two or four bytes), so `datasets` reads those with the
codec itself, and the error handler `UNDECODABLE` marks each byte it cannot decode as the
private-use character U+10FE00 + byte (not a lone surrogate: Arrow cannot hold those), found
here per record. A record whose real text holds one of those 256 characters of plane 16's
private use area is rejected as undecodable too: a cost taken for UTF-16/32 sources only.
"""

from __future__ import annotations

import codecs
import functools
import os
import re

from .objects import read_head

UNICODE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32-LE"), (b"\x00\x00\xfe\xff", "UTF-32-BE"),
                (b"\xff\xfe", "UTF-16-LE"), (b"\xfe\xff", "UTF-16-BE"))   # UTF-32-LE before UTF-16-LE
ASCII_PROBE = "\n\r\t ,;\"'{}[]:\\-.0123456789azAZ"   # what must keep its bytes to be read as Latin-1
# Tried on a file with invalid UTF-8 to say which encoding it may be in. utf-16 only with its
# BOM: without one, almost any even-length bytes "decode", as nonsense.
HINT_ENCODINGS = ("cp1252", "latin-1", "utf-16")
HINT_PROBE_BYTES = 1 << 20          # the first MiB of such a file is tried
CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")   # not in text: a decoding that makes them is wrong
UNDECODABLE = "embcache-undecodable"
MARK_BASE = 0x10FE00                 # an undecodable byte b is read as chr(MARK_BASE + b)
MARKS = re.compile(f"[{chr(MARK_BASE)}-{chr(MARK_BASE + 0xFF)}]")


def _mark_undecodable(error: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(chr(MARK_BASE + b) for b in error.object[error.start:error.end]), error.end


codecs.register_error(UNDECODABLE, _mark_undecodable)


@functools.lru_cache(maxsize=None)
def reads_as_bytes(encoding: str | None) -> bool:
    """True if `encoding` writes ASCII as ASCII, so files are read as Latin-1 and decoded here."""
    if encoding is None:
        return True
    try:
        return ASCII_PROBE.encode(encoding) == ASCII_PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def reader_encoding(encoding: str | None) -> dict[str, str]:
    """The encoding options `datasets` / pandas read a text file with."""
    if reads_as_bytes(encoding):
        return {"encoding": "latin-1"}
    return {"encoding": encoding, "encoding_errors": UNDECODABLE}


def decode_field(name: str, value: str, encoding: str | None) -> tuple[str | None, tuple[str, str] | None]:
    """(text, None) for a value read with `reader_encoding(encoding)`; else (None, ("invalid_utf8", detail))."""
    if not reads_as_bytes(encoding):
        found = MARKS.search(value)
        if found is None:
            return value, None
        bad = found.start()
        return None, ("invalid_utf8", f"{name}: byte 0x{ord(value[bad]) - MARK_BASE:02x} at character "
                                      f"{bad + 1:,} is not valid {encoding}")
    raw = value.encode("latin-1")
    try:
        return raw.decode(encoding or "utf-8"), None
    except UnicodeDecodeError as e:
        return None, ("invalid_utf8", decode_error(name, raw, e, encoding or "UTF-8"))


def decode_error(name: str, raw: bytes, e: UnicodeDecodeError, encoding: str = "UTF-8") -> str:
    line_start = raw.rfind(b"\n", 0, e.start) + 1
    line_number = raw.count(b"\n", 0, e.start) + 1
    line = f"line {line_number:,}, " if b"\n" in raw else ""
    return f"{name}: invalid {encoding} byte 0x{raw[e.start]:02x} at {line}byte {e.start - line_start + 1:,}"


def utf8_error(name: str, raw: bytes, e: UnicodeDecodeError) -> str:
    return decode_error(name, raw, e)


def encoding_hint(path: str, state: tuple[int, object] | None = None) -> str:
    """For an invalid-UTF-8 reject: which encodings decode the file, and how to pass one.
    state: (size, version) of an object, from its listing; None: a local file, stat-ed."""
    if state is None:
        stat = os.stat(path)
        state = (stat.st_size, stat.st_mtime_ns)
    return _encoding_hint(path, *state)


@functools.lru_cache(maxsize=256)
def _encoding_hint(path: str, size: int, version: object) -> str:
    head = read_head(path, HINT_PROBE_BYTES)
    fits = [name for name in HINT_ENCODINGS if _decodes(head, name, final=size <= HINT_PROBE_BYTES)]
    if not fits:
        return ""
    what = "the file" if size <= HINT_PROBE_BYTES else f"the file's first {HINT_PROBE_BYTES:,} bytes"
    first = fits[0]
    return (f"; {what} decode{'s' if what == 'the file' else ''} as {' or '.join(fits)}: if that is "
            f"its encoding, pass it (--encoding {first}, or encoding = \"{first}\" in the source)")


def _decodes(data: bytes, encoding: str, final: bool) -> bool:
    if encoding.startswith("utf-16") and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(data, final=final)   # a cut character is fine
    except UnicodeDecodeError:
        return False
    return not CONTROLS.search(text)     # latin-1 "decodes" any bytes: binary data is not text
