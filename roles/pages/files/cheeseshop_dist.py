"""cheeseshop_dist: what a distribution file is, read once, with bounds (cheeseshop.pypi); and the
one client of the page service's socket (ask), which every other program of the collection uses.

The one reader of distribution files. The upload path (cheeseshop-pypiserver) checks an upload
with it before storing it, and the page service (cheeseshop-pages) lists a file with it, so the
two can never disagree on what a file is. Every file is hostile until read:
  * the file name follows one rule (parse_filename), its project and version are normalised one
    way (normalize, canonical_version);
  * only the member a page needs is read (a wheel's METADATA, an sdist's top-level PKG-INFO);
  * decompressed bytes, members, metadata size and time are bounded (LIMITS);
  * read() raises only Refused (never listed) or Incomplete (maybe still being written); any
    other error of the archive libraries becomes a Refused, so no caller can be crashed.
Standard library only: the page service runs on the host's python3, pypiserver in its venv.
"""
from __future__ import annotations

import bz2
import datetime
import email.parser
import email.policy
import gzip
import hashlib
import os
import re
import socket
import struct
import tarfile
import time
import zipfile
from typing import NamedTuple

SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
SUFFIXES = (".whl", ".egg") + SDIST_SUFFIXES
# A plain file name: no leading dot, nothing a shell or a URL would read twice.
FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.!+-]*$")
# A project name as PEP 508 allows it.
PROJECT = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
# PEP 440, in its normalised and its permitted spellings.
VERSION = re.compile(
    r"^v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>[0-9]+)?)?"
    r"(?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE)
# What a Requires-Python specifier is made of (PEP 440 specifiers), and nothing else.
REQUIRES_PYTHON = re.compile(r"^[A-Za-z0-9.*,<>=!~+ -]*$")
CHUNK = 1 << 20


class Limits(NamedTuple):
    metadata_bytes: int = 1 << 20          # a METADATA or PKG-INFO larger than this is no metadata
    members: int = 100_000                 # members of an archive
    decompressed_floor: int = 256 << 20    # an sdist may always unpack to this much...
    ratio: int = 50                        # ...or to this many times its own size
    seconds: float = 10.0                  # wall time for one file


LIMITS = Limits()


class Refused(Exception):
    """Not a distribution this index lists; the message says why, and may be shown to the
    uploader (it names no path of the server)."""


class Incomplete(Refused):
    """Cannot be read whole: cut short, or changed while it was read (still being written)."""


class Name(NamedTuple):
    project: str        # as in the file name
    version: str        # as in the file name
    kind: str           # wheel, egg or sdist
    tags: str           # a wheel's python-abi-platform, an egg's python(-platform); "" for an sdist

    def release_file(self):
        """What makes a file one of a kind within its release: an sdist is one per release
        (PyPI's rule), a wheel one per tag set whatever its build tag or spelling."""
        return (normalize(self.project), canonical_version(self.version), self.kind, self.tags)


class Distribution(NamedTuple):
    project: str        # normalised (PEP 503): the directory of its pages
    name: str           # as the metadata spells it
    version: str
    requires_python: str | None
    metadata: bytes     # the METADATA or PKG-INFO, as it is in the file
    sha256: str
    size: int
    mtime_ns: int

    @property
    def upload_time(self):
        return (datetime.datetime.fromtimestamp(self.mtime_ns / 1e9, datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def normalize(name):
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def canonical_version(version):
    """PEP 440's normal form (1.0.0 and 1.0 are one version, 1.0-1 is 1.0.post1); the lowered
    text when it is no PEP 440 version."""
    match = VERSION.match(version.strip())
    if not match:
        return version.strip().lower()
    parts = []
    if match["epoch"] and int(match["epoch"]):
        parts.append(f"{int(match['epoch'])}!")
    release = [int(n) for n in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    parts.append(".".join(map(str, release)))
    if match["pre_l"]:
        label = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}.get(
            match["pre_l"].lower(), match["pre_l"].lower())
        parts.append(f"{label}{int(match['pre_n'] or 0)}")
    if match["post_n1"] or match["post_l"]:
        parts.append(f".post{int(match['post_n1'] or match['post_n2'] or 0)}")
    if match["dev_l"]:
        parts.append(f".dev{int(match['dev_n'] or 0)}")
    if match["local"]:
        parts.append("+" + re.sub(r"[-_]", ".", match["local"].lower()))
    return "".join(parts)


def is_distribution(filename):
    """Whether a directory entry is one to read at all: no dot-file, a known suffix."""
    return bool(FILENAME.match(filename)) and filename.endswith(SUFFIXES)


def parse_filename(filename):
    """The project, version, kind and tags a distribution's file name gives; Refused when it
    is no plain distribution name (PEP 427 wheels, eggs, sdists with a PEP 440 version)."""
    if not FILENAME.match(filename) or not filename.endswith(SUFFIXES):
        raise Refused(f"{filename!r} is not a distribution file name: it must start with a letter or "
                      f"digit, hold only letters, digits and . _ ! + -, and end in {', '.join(SUFFIXES)}")
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6) or (len(parts) == 6 and not parts[2][:1].isdigit()):
            raise Refused(f"{filename!r} is not a wheel's name: NAME-VERSION[-BUILD]-PYTHON-ABI-PLATFORM.whl")
        project, version, tags, kind = parts[0], parts[1], "-".join(parts[-3:]).lower(), "wheel"
    elif filename.endswith(".egg"):
        parts = filename[:-4].split("-")
        if len(parts) < 2:
            raise Refused(f"{filename!r} is not an egg's name: NAME-VERSION[-PYTHON[-PLATFORM]].egg")
        project, version, tags, kind = parts[0], parts[1], "-".join(parts[2:]).lower(), "egg"
    else:
        stem = next(filename[: -len(s)] for s in SDIST_SUFFIXES if filename.endswith(s))
        match = re.match(r"^(.+?)-(\d[^-]*)$", stem)
        if not match:
            raise Refused(f"{filename!r} is not an sdist's name: NAME-VERSION{filename[len(stem):]}")
        project, version, tags, kind = match[1], match[2], "", "sdist"
    if not PROJECT.match(project):
        raise Refused(f"{filename!r} names no valid project")
    if not VERSION.match(version):
        raise Refused(f"{filename!r} has no PEP 440 version")
    return Name(project, version, kind, tags)


# --- Reading ---------------------------------------------------------------------------------

class _Clock:
    def __init__(self, filename, limits):
        self.filename, self.limits = filename, limits
        self.deadline = time.monotonic() + limits.seconds

    def tick(self):
        if time.monotonic() > self.deadline:
            raise Refused(f"{self.filename}: not read within {self.limits.seconds:g} s")


def _zip_entries(handle, filename):
    """The member count the zip's end record declares, read before zipfile builds a list of
    them all (a million empty members fit in 50 MB)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 65557))
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise Incomplete(f"{filename}: no end of its zip directory (cut short?)")
    entries = struct.unpack_from("<H", tail, at + 10)[0]
    if entries == 0xFFFF:
        at64 = tail.rfind(b"PK\x06\x06", 0, at)
        if at64 < 0 or at64 + 40 > len(tail):
            return 1 << 62
        entries = struct.unpack_from("<Q", tail, at64 + 32)[0]
    return entries


def _read_zip(path, filename, kind, limits, clock):
    with open(path, "rb") as handle:
        if _zip_entries(handle, filename) > limits.members:
            raise Refused(f"{filename}: more than {limits.members} members")
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            if kind == "wheel":
                wanted = [i for i in infos if re.match(r"^[^/]+\.dist-info/METADATA$", i.filename)]
            elif kind == "egg":
                wanted = [i for i in infos if i.filename == "EGG-INFO/PKG-INFO"]
            else:
                wanted = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith("/PKG-INFO")]
            if len(wanted) != 1:
                what = "METADATA" if kind == "wheel" else "PKG-INFO"
                raise Refused(f"{filename}: {len(wanted) or 'no'} {what} file{'s' if len(wanted) > 1 else ''} "
                              "where there must be one")
            info = wanted[0]
            if info.flag_bits & 0x1:
                raise Refused(f"{filename}: its metadata is encrypted")
            if info.file_size > limits.metadata_bytes:
                raise Refused(f"{filename}: its metadata is larger than {limits.metadata_bytes} bytes")
            clock.tick()
            with archive.open(info) as member:
                data = member.read(limits.metadata_bytes + 1)
            if len(data) > limits.metadata_bytes:
                raise Refused(f"{filename}: its metadata is larger than {limits.metadata_bytes} bytes")
            return data


class _Bounded:
    """A decompressed stream that stops at a byte count and a deadline."""

    def __init__(self, stream, budget, clock, filename):
        self.stream, self.budget, self.clock, self.filename = stream, budget, clock, filename
        self.count = 0

    def read(self, size=-1):
        data = self.stream.read(CHUNK if size is None or size < 0 else min(size, CHUNK * 4))
        self.count += len(data)
        if self.count > self.budget:
            raise Refused(f"{self.filename}: unpacks to more than {self.budget} bytes")
        self.clock.tick()
        return data


def _read_tar(path, filename, limits, clock):
    opener = bz2.open if filename.endswith(".tar.bz2") else gzip.open
    budget = max(limits.decompressed_floor, limits.ratio * os.path.getsize(path))
    found, members = None, 0
    with opener(path, "rb") as raw:
        stream = _Bounded(raw, budget, clock, filename)
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                members += 1
                if members > limits.members:
                    raise Refused(f"{filename}: more than {limits.members} members")
                if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO") and member.isfile():
                    if found is not None:
                        raise Refused(f"{filename}: two top-level PKG-INFO files where there must be one")
                    if member.size > limits.metadata_bytes:
                        raise Refused(f"{filename}: its PKG-INFO is larger than {limits.metadata_bytes} bytes")
                    found = archive.extractfile(member).read()
                # A stream keeps every member it passed; only the one above is needed.
                archive.members.clear()
        # The rest of the stream: a cut-off file ends early (EOFError) or fails its check.
        while stream.read(CHUNK):
            pass
    if found is None:
        raise Refused(f"{filename}: no top-level PKG-INFO")
    return found


def _headers(data, filename):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{filename}: its metadata is not UTF-8") from None
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)


def _field(headers, key):
    values = headers.get_all(key) or []
    # Only ASCII white space: str.strip() would also take a no-break space off a specifier.
    return [str(v).strip(" \t\r\n") for v in values]


def read(path, filename, limits=LIMITS):
    """The Distribution in the file at path, named filename; raises Refused or Incomplete."""
    try:
        return _read(path, filename, limits)
    except Refused:
        raise
    except (EOFError, zipfile.BadZipFile, tarfile.ReadError) as problem:
        raise Incomplete(f"{filename}: cannot be read whole ({problem or type(problem).__name__})") from None
    except MemoryError:
        raise Refused(f"{filename}: too large to read") from None
    except Exception as problem:  # noqa: BLE001 - an archive library's error must not escape
        raise Refused(f"{filename}: cannot be read ({type(problem).__name__}: {problem})") from None


def _read(path, filename, limits):
    named = parse_filename(filename)
    clock = _Clock(filename, limits)
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            clock.tick()
    if named.kind in ("wheel", "egg") or filename.endswith(".zip"):
        metadata = _read_zip(path, filename, named.kind, limits, clock)
    else:
        metadata = _read_tar(path, filename, limits, clock)
    if os.stat(path).st_mtime_ns != stat.st_mtime_ns:
        raise Incomplete(f"{filename}: changed while it was read")
    headers = _headers(metadata, filename)
    names, versions = _field(headers, "Name"), _field(headers, "Version")
    if len(names) != 1 or len(versions) != 1:
        raise Refused(f"{filename}: its metadata must give one Name and one Version")
    name, version = names[0], versions[0]
    if normalize(name) != normalize(named.project):
        raise Refused(f"{filename}: its metadata names the project {name!r}, its file name {named.project!r}")
    if canonical_version(version) != canonical_version(named.version) or not VERSION.match(version):
        raise Refused(f"{filename}: its metadata gives the version {version!r}, its file name {named.version!r}")
    requires = _field(headers, "Requires-Python")
    if len(requires) > 1 or (requires and (not requires[0].isascii() or not REQUIRES_PYTHON.match(requires[0]))):
        raise Refused(f"{filename}: its Requires-Python is not one version specifier")
    return Distribution(normalize(name), name, version, requires[0] if requires and requires[0] else None,
                        metadata, digest.hexdigest(), stat.st_size, stat.st_mtime_ns)


# The longest answer the page service gives: a project's file names (files INDEX NAME).
MAX_REPLY = 16 << 20


def ask(path, line, timeout=60):
    """One request line to the page service's socket (cheeseshop-pages' answer()) and its one
    reply line, stripped; OSError when no service answers in time."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        client.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n") and len(reply) <= MAX_REPLY:
            data = client.recv(65536)
            if not data:
                break
            reply += data
    return reply.decode(errors="replace").strip()
