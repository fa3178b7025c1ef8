"""Text encodings of source files: how `datasets` reads them, each record's decoding, and detection.

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

Detection (`detect_encoding`, charset-normalizer): the encoding `--encoding auto` reads a file
with, and what an invalid-UTF-8 reject suggests. A file is UTF-8 when its probe (its first MiB
that holds a non-ASCII byte) decodes as UTF-8, or when most of its non-ASCII text does (a
damaged record, or a mix: rejecting the rest beats misreading every UTF-8 record); else
charset-normalizer ranks the encodings that decode it. cp1252 leaves five bytes undefined
(0x81 0x8D 0x8F 0x90 0x9D) and a stray one (a byte from another encoding, a cut character)
would rule it out, so the detector sees them masked; among the encodings it scores as well as
its first, cp1252, the most common, wins. Under MIN_EVIDENCE non-ASCII bytes (a short file: a
tweet, a name) there is nothing to detect from: cp1252 reads such a file when it can (so a
short cp1250 or cp1251 file is misread; pass its encoding).
A file read with auto has the codec "auto:<codec>" (registered here: it decodes as <codec>),
so every reject of it names the encoding detection chose:

    >>> detect_bytes("I \\u201clove\\u201d this caf\\u00e9\\n".encode("cp1252") * 20).encoding
    'cp1252'
"""

from __future__ import annotations

import codecs
import functools
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from .objects import is_url, open_binary

UNICODE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32-LE"), (b"\x00\x00\xfe\xff", "UTF-32-BE"),
                (b"\xff\xfe", "UTF-16-LE"), (b"\xfe\xff", "UTF-16-BE"))   # UTF-32-LE before UTF-16-LE
ASCII_PROBE = "\n\r\t ,;\"'{}[]:\\-.0123456789azAZ"   # what must keep its bytes to be read as Latin-1
# Tried on a file with invalid UTF-8 beside the detector's choice: listed with it when they read
# the file the same way ("cp1252 or latin-1"). utf-16 only with its BOM (detection says so).
HINT_ENCODINGS = ("cp1252", "latin-1")
PROBE_BYTES = 1 << 20               # detection reads this much of a file, from its first non-ASCII MiB
SCAN_BYTES = 64 << 20               # ... looked for this far: an all-ASCII start is skipped, not trusted
CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")   # not in text: a decoding that makes them is wrong
UNDECODABLE = "embcache-undecodable"
MARK_BASE = 0x10FE00                 # an undecodable byte b is read as chr(MARK_BASE + b)
MARKS = re.compile(f"[{chr(MARK_BASE)}-{chr(MARK_BASE + 0xFF)}]")
AUTO = "auto"                        # Source.encoding: detect each file's encoding
AUTO_PREFIX = "auto:"                # a file's detected codec: "auto:cp1252" decodes as cp1252
CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"
PREFERRED = "cp1252"                 # wins a tie among the detector's candidates (web's most used legacy)
TIE_CHAOS, TIE_COHERENCE = 0.5, 5.0  # percent points from the detector's first that count as a tie
MIN_EVIDENCE = 32                    # fewer non-ASCII bytes than this: no detector can tell (charset-
                                     # normalizer calls "\u201csmart\u201d quotes" cp437): cp1252 if it reads them
ASCII_BYTES = bytes(range(128))


def _mark_undecodable(error: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(chr(MARK_BASE + b) for b in error.object[error.start:error.end]), error.end


codecs.register_error(UNDECODABLE, _mark_undecodable)


# -- the codecs "auto" and "auto:<codec>" -----------------------------------------------
def _cp1252_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    """Each byte that is not UTF-8 as its cp1252 character (its latin-1 one where cp1252 has none)."""
    bad = error.object[error.start:error.end]
    return "".join(chr(b) if b in CP1252_UNDEFINED else bytes([b]).decode("cp1252") for b in bad), error.end


def _auto_decode(data: bytes, errors: str = "strict", final: bool = True) -> tuple[str, int]:
    """"auto" where no file is at hand (a header or a file's JSON keys while planning): UTF-8, a
    byte that is not UTF-8 read as its cp1252 character. Each file is then read as detected."""
    return codecs.utf_8_decode(bytes(data), "embcache-cp1252-fallback", final)


class _AutoDecoder(codecs.BufferedIncrementalDecoder):
    def _buffer_decode(self, data, errors, final):
        return _auto_decode(data, errors, final)


def _auto_codecs(name: str) -> codecs.CodecInfo | None:
    """Python's codec search hook: "auto" as above, "auto:<codec>" (normalized "auto_<codec>") as <codec>."""
    if name == AUTO:
        return codecs.CodecInfo(codecs.utf_8_encode, _auto_decode, incrementaldecoder=_AutoDecoder,
                                incrementalencoder=codecs.getincrementalencoder("utf-8"), name=AUTO)
    if name.startswith("auto_"):
        try:
            real = codecs.lookup(name[5:])
        except LookupError:
            return None
        return codecs.CodecInfo(real.encode, real.decode, real.streamreader, real.streamwriter,
                                real.incrementalencoder, real.incrementaldecoder, name=AUTO_PREFIX + real.name)
    return None


codecs.register_error("embcache-cp1252-fallback", _cp1252_fallback)
codecs.register(_auto_codecs)


def codec_of(encoding: str | None) -> str | None:
    """The codec a Source.encoding reads with: "auto:cp1252" -> "cp1252"; None (UTF-8) and "auto" as given."""
    return encoding[len(AUTO_PREFIX):] if encoding and encoding.startswith(AUTO_PREFIX) else encoding


def _shown(encoding: str | None) -> str:
    if not encoding:
        return "UTF-8"
    codec = codec_of(encoding)
    return codec if codec == encoding else f"{codec} (chosen by --encoding auto)"


# -- reading and decoding records ----------------------------------------------------------
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
    return {"encoding": codec_of(encoding), "encoding_errors": UNDECODABLE}


def decode_field(name: str, value: str, encoding: str | None) -> tuple[str | None, tuple[str, str] | None]:
    """(text, None) for a value read with `reader_encoding(encoding)`; else (None, ("invalid_utf8", detail))."""
    if not reads_as_bytes(encoding):
        found = MARKS.search(value)
        if found is None:
            return value, None
        bad = found.start()
        return None, ("invalid_utf8", f"{name}: byte 0x{ord(value[bad]) - MARK_BASE:02x} at character "
                                      f"{bad + 1:,} is not valid {_shown(encoding)}")
    raw = value.encode("latin-1")
    try:
        return raw.decode(encoding or "utf-8"), None
    except UnicodeDecodeError as e:
        return None, ("invalid_utf8", decode_error(name, raw, e, _shown(encoding)))


def decode_error(name: str, raw: bytes, e: UnicodeDecodeError, encoding: str = "UTF-8") -> str:
    line_start = raw.rfind(b"\n", 0, e.start) + 1
    line_number = raw.count(b"\n", 0, e.start) + 1
    line = f"line {line_number:,}, " if b"\n" in raw else ""
    return f"{name}: invalid {encoding} byte 0x{raw[e.start]:02x} at {line}byte {e.start - line_start + 1:,}"


def utf8_error(name: str, raw: bytes, e: UnicodeDecodeError) -> str:
    return decode_error(name, raw, e)


# -- detection -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """What a file's bytes were found to be."""
    encoding: str                  # a Python codec name: "utf-8", "cp1252", "utf-16", "cp1251", ...
    how: str                       # why, for people: "valid UTF-8", "UTF-16-LE BOM", "charset-normalizer, English"
    undefined: bytes = b""         # bytes of the probe that `encoding` cannot decode (their records are rejected)
    same: tuple[str, ...] = ()     # other encodings (HINT_ENCODINGS) that read the probe identically
    whole_file: bool = True        # the probe was the whole file

    def __str__(self) -> str:
        return f"{self.encoding} ({self.how})"


def detect_bytes(data: bytes, final: bool = True) -> Detection | None:
    """The encoding of `data` (a file's probe; `final`: it ends where the file does), or None
    when no text encoding fits (binary data)."""
    for mark, name in UNICODE_BOMS:
        if data.startswith(mark):
            return Detection(name[:6].lower(), f"{name} BOM")
    data = data.removeprefix(b"\xef\xbb\xbf")
    if _decodes(data, "utf-8", final, controls_ok=True):
        return Detection("utf-8", "ASCII only" if data.isascii() else "valid UTF-8")
    as_utf8 = data.decode("utf-8", errors="replace")
    invalid = as_utf8.count("\ufffd")
    valid = len(as_utf8) - len(as_utf8.encode("ascii", errors="ignore")) - invalid
    if valid >= invalid:                  # a UTF-8 file with damaged records, or mixed with another encoding
        return Detection("utf-8", f"mostly UTF-8: {valid:,} non-ASCII characters, {invalid:,} invalid bytes")
    masked = data.translate(_MASK)
    non_ascii = len(data.translate(None, ASCII_BYTES))
    if non_ascii < MIN_EVIDENCE and _decodes(masked, PREFERRED, final):
        encoding, how = PREFERRED, (f"{non_ascii} non-ASCII byte{'s' if non_ascii != 1 else ''}, too few to "
                                    "detect from: cp1252, the most common legacy encoding, reads them")
    else:
        from charset_normalizer import from_bytes
        candidates = list(from_bytes(masked))
        if not candidates:
            return None
        first = chosen = candidates[0]
        for c in candidates:              # a tie (or the same text) goes to cp1252
            if (PREFERRED in c.could_be_from_charset and c.percent_chaos <= first.percent_chaos + TIE_CHAOS
                    and c.percent_coherence >= first.percent_coherence - TIE_COHERENCE):
                chosen = c
                break
        encoding = PREFERRED if PREFERRED in chosen.could_be_from_charset else codecs.lookup(chosen.encoding).name
        how = "detected by charset-normalizer"
    undefined = bytes(sorted(b for b in set(data) if bytes([b]) not in _decodable(encoding)))
    text = data.decode(encoding, errors="replace")
    same = tuple(e for e in HINT_ENCODINGS if codecs.lookup(e).name != encoding
                 and _decodes(data, e, final) and data.decode(e, errors="replace") == text)
    return Detection(encoding, how, undefined, same)


_MASK = bytes.maketrans(CP1252_UNDEFINED, b"?" * len(CP1252_UNDEFINED))


@functools.lru_cache(maxsize=64)
def _decodable(encoding: str) -> frozenset[bytes]:
    """The single bytes `encoding` decodes on their own (all of them for multi-byte codecs' lead
    bytes: those count as decodable here, whole characters are checked when records are read)."""
    out = set()
    for b in range(256):
        try:
            codecs.getincrementaldecoder(encoding)().decode(bytes([b]), final=False)
            out.add(bytes([b]))
        except UnicodeDecodeError:
            pass
    return frozenset(out)


def _decodes(data: bytes, encoding: str, final: bool, controls_ok: bool = False) -> bool:
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(data, final=final)   # a cut character is fine
    except UnicodeDecodeError:
        return False
    return controls_ok or not CONTROLS.search(text)     # latin-1 "decodes" any bytes: binary data is not text


def detect_encoding(path: str, state: tuple[int, object] | None = None) -> Detection | None:
    """`detect_bytes` of the file's probe (PROBE_BYTES from its first chunk with a non-ASCII byte).

    state: (size, version) of an object from its listing; None: a local file, stat-ed."""
    if state is None:
        stat = os.stat(path)
        state = (stat.st_size, stat.st_mtime_ns)
    return _detect_file(path, *state)


@functools.lru_cache(maxsize=256)
def _detect_file(path: str, size: int, version: object) -> Detection | None:
    with open_binary(path) if is_url(path) else open(path, "rb") as f:
        data = f.read(PROBE_BYTES)
        scanned = len(data)
        while data.isascii() and scanned < SCAN_BYTES and (more := f.read(PROBE_BYTES)):
            data, scanned = more, scanned + len(more)   # an ASCII chunk ends on a character boundary
        final = not f.read(1)
    found = detect_bytes(data, final)
    if found is not None and size > PROBE_BYTES:
        found = Detection(found.encoding, found.how, found.undefined, found.same, whole_file=False)
    return found


def encoding_hint(path: str, state: tuple[int, object] | None = None) -> str:
    """For an invalid-UTF-8 reject: which encoding the file seems to be in, and how to pass it.
    state: (size, version) of an object, from its listing; None: a local file, stat-ed."""
    found = detect_encoding(path, state)
    if found is None:
        return ""
    if found.encoding == "utf-8":
        return (f"; the rest of the file reads as UTF-8 ({found.how}): a damaged record, or records in "
                "another encoding (no one encoding reads them all)" if found.how.startswith("mostly") else "")
    what = "the file" if found.whole_file else "the file's first MiB with non-ASCII bytes"
    verb = "decodes" if found.whole_file else "decode"
    undefined = (f" except {len(found.undefined)} byte value(s) undefined in it "
                 f"({', '.join(f'0x{b:02x}' for b in found.undefined[:5])}: their records stay rejected)"
                 if found.undefined else "")
    return (f"; {what} {verb} as {' or '.join((found.encoding, *found.same))}{undefined}: if that is its "
            f"encoding ({found.how}), pass it (--encoding {found.encoding}, or encoding = \"{found.encoding}\" "
            "in the source; --encoding auto detects each file's)")


# -- --encoding auto: each file's choice, and a record of them -----------------------------
_chosen: ContextVar[dict | None] = ContextVar("embcache_chosen_encodings", default=None)


def choose_encoding(path: str) -> str:
    """The Source.encoding a file of an "auto" source is read with: "auto:<detected codec>"
    ("auto:utf-8" when nothing fits, so its records are rejected as invalid UTF-8). Recorded
    in the block of `chosen_encodings` around it, if any."""
    found = detect_encoding(path, _object_state(path)) or Detection("utf-8", "no text encoding fits: read as UTF-8")
    record = _chosen.get()
    if record is not None:
        record[path] = found
    return AUTO_PREFIX + found.encoding


def _object_state(path: str) -> tuple[int, object] | None:
    """(size, version) of an object (one listing call); None for a local path (stat-ed instead)."""
    if not is_url(path):
        return None
    from .objects import filesystem, state_of
    fs, stripped = filesystem(path)
    state = state_of(fs.info(stripped))
    return state.size, state


@contextmanager
def chosen_encodings() -> Iterator[dict[str, Detection]]:
    """{path: Detection} of every file `choose_encoding` decided on in the block (this context)."""
    record: dict[str, Detection] = {}
    token = _chosen.set(record)
    try:
        yield record
    finally:
        _chosen.reset(token)


def summarize(chosen: dict[str, Detection], examples: int = 3) -> dict[str, dict]:
    """{encoding: {"files": n, "examples": [path, ...], "how": the first's reason}}, most files first."""
    out: dict[str, dict] = {}
    for path, found in chosen.items():
        entry = out.setdefault(found.encoding, {"files": 0, "examples": [], "how": found.how})
        entry["files"] += 1
        if len(entry["examples"]) < examples:
            entry["examples"].append(path)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["files"]))


def describe(summary: dict[str, dict]) -> str:
    """`summarize`'s result for people: "cp1252 for 1 file (tweets.csv): detected by charset-normalizer; …"."""
    def files(entry: dict) -> str:
        n, names = entry["files"], ", ".join(os.path.basename(p) for p in entry["examples"])
        return f"{n:,} file{'s' if n != 1 else ''} ({names}{', …' if n > len(entry['examples']) else ''})"
    return "; ".join(f"{codec} for {files(e)}: {e['how']}" for codec, e in summary.items())
