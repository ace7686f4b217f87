"""cheeseshop_dist, the one reader of distribution files (roles/pages/files/cheeseshop_dist.py):
every archive kind, the file-name rule, and archives made by an attacker. Each hostile file
must end in Refused or Incomplete, never in another exception."""
import bz2
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles" / "pages" / "files"))
import cheeseshop_dist as dist  # noqa: E402

META = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


def wheel(d, filename, metadata, dist_info="foo-1.0.dist-info", extra=()):
    with zipfile.ZipFile(d / filename, "w", zipfile.ZIP_DEFLATED) as z:
        if metadata is not None:
            z.writestr(f"{dist_info}/METADATA", metadata)
        z.writestr("foo/__init__.py", "x = 1\n")
        for info, data in extra:
            z.writestr(info, data)
    return d / filename


def tar(d, filename, members, mode="w:gz"):
    with tarfile.open(d / filename, mode) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return d / filename


def test_every_archive_kind_is_read(tmp_path):
    meta = META.format(name="Foo.Bar", version="1.0").encode() + b"Requires-Python: >=3.8, <4\n"
    files = {
        "foo_bar-1.0-py3-none-any.whl": wheel(tmp_path, "foo_bar-1.0-py3-none-any.whl", meta, "foo_bar-1.0.dist-info"),
        "foo-bar-1.0.tar.gz": tar(tmp_path, "foo-bar-1.0.tar.gz", [("foo-bar-1.0/PKG-INFO", meta)]),
        "foo-bar-1.0.tgz": tar(tmp_path, "foo-bar-1.0.tgz", [("foo-bar-1.0/PKG-INFO", meta)]),
        "foo-bar-1.0.tar.bz2": tar(tmp_path, "foo-bar-1.0.tar.bz2", [("foo-bar-1.0/PKG-INFO", meta)], "w:bz2"),
    }
    with zipfile.ZipFile(tmp_path / "foo-bar-1.0.zip", "w") as z:
        z.writestr("foo-bar-1.0/PKG-INFO", meta)
    files["foo-bar-1.0.zip"] = tmp_path / "foo-bar-1.0.zip"
    with zipfile.ZipFile(tmp_path / "foo_bar-1.0-py3.11.egg", "w") as z:
        z.writestr("EGG-INFO/PKG-INFO", meta)
    files["foo_bar-1.0-py3.11.egg"] = tmp_path / "foo_bar-1.0-py3.11.egg"
    for filename, path in files.items():
        found = dist.read(path, filename)
        assert (found.project, found.name, found.version, found.requires_python) == (
            "foo-bar", "Foo.Bar", "1.0", ">=3.8, <4"), filename
        assert found.metadata == meta and found.size == path.stat().st_size and len(found.sha256) == 64


@pytest.mark.parametrize("filename", [
    ".foo-1.0.tar.gz", "_x-1.0.tar.gz", "-x-1.0.tar.gz", "x-1.0.tar.xz", "x-1.0.tar.gz.asc",
    "x.tar.gz", "x-one.tar.gz", "foo-1.0-py3-any.whl", "foo-1.0-x-py3-none-any.whl",
    "foo-1.0<b>-py3-none-any.whl", "../foo-1.0.tar.gz", "foo-1.0.exe",
])
def test_file_names_that_are_no_plain_distribution_are_refused(filename):
    assert not (dist.is_distribution(filename) and filename.count("/") == 0 and _parses(filename))


def _parses(filename):
    try:
        dist.parse_filename(filename)
        return True
    except dist.Refused:
        return False


def test_a_case_variant_or_a_build_tag_is_the_same_file_of_a_release():
    published = dist.parse_filename("hello_cheeseshop-1.0.0-py3-none-any.whl").release_file()
    assert dist.parse_filename("Hello_Cheeseshop-1.0.0-py3-none-any.whl").release_file() == published
    assert dist.parse_filename("hello_cheeseshop-1.0.0-1-py3-none-any.whl").release_file() == published
    assert dist.parse_filename("hello.cheeseshop-1.0-py3-none-any.whl").release_file() == published
    assert dist.parse_filename("hello_cheeseshop-1.0.0-py2-none-any.whl").release_file() != published
    # One sdist per release, whatever its format.
    assert (dist.parse_filename("Hello-Cheeseshop-1.0.tar.gz").release_file()
            == dist.parse_filename("hello_cheeseshop-1.0.0.zip").release_file())


@pytest.mark.parametrize("one,other", [
    ("1.0", "1.0.0"), ("1.0-1", "1.0.post1"), ("1.0RC1", "1.0rc1"), ("0!1.0", "1.0"),
    ("1.0.dev", "1.0.dev0"), ("1.0+Local_1", "1.0+local.1"), ("v1.0alpha2", "1.0a2"),
])
def test_pep_440_spellings_of_one_version_are_one(one, other):
    assert dist.canonical_version(one) == dist.canonical_version(other)


def test_the_metadata_must_agree_with_the_file_name(tmp_path):
    """The two cases where the launcher and the page service disagreed, and a version that
    differs from the file's (it was listed as '1.0<b>')."""
    no_version = wheel(tmp_path, "foo-1.0-py3-none-any.whl", "Metadata-Version: 2.1\nName: bar\n")
    with pytest.raises(dist.Refused, match="one Name and one Version"):
        dist.read(no_version, no_version.name)
    two = tar(tmp_path, "foo-1.0.tar.gz", [("foo-1.0/PKG-INFO", META.format(name="foo", version="1.0").encode()),
                                            ("bar-1.0/PKG-INFO", META.format(name="foo", version="1.0").encode())])
    with pytest.raises(dist.Refused, match="two top-level PKG-INFO"):
        dist.read(two, two.name)
    other = wheel(tmp_path, "foo-2.0-py3-none-any.whl", META.format(name="bar", version="2.0"))
    with pytest.raises(dist.Refused, match="names the project 'bar'"):
        dist.read(other, other.name)
    lie = wheel(tmp_path, "foo-3.0-py3-none-any.whl", META.format(name="foo", version="3.0<b>"))
    with pytest.raises(dist.Refused, match="gives the version"):
        dist.read(lie, lie.name)
    twice = wheel(tmp_path, "foo-4.0-py3-none-any.whl", META.format(name="foo", version="4.0"),
                  extra=[("other-4.0.dist-info/METADATA", META.format(name="foo", version="4.0"))])
    with pytest.raises(dist.Refused, match="2 METADATA files"):
        dist.read(twice, twice.name)


def test_junk_with_a_valid_name_is_refused(tmp_path):
    for filename in ("foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz", "foo-1.0.tar.bz2", "foo-1.0.zip"):
        (tmp_path / filename).write_bytes(b"not an archive at all\n" * 10)
        with pytest.raises(dist.Refused):
            dist.read(tmp_path / filename, filename)


def test_a_non_ascii_requires_python_is_refused_not_raised(tmp_path):
    """A no-break space after >=3.8 made the old header parser return an object without
    .strip(), and the page service crashed on it at every start."""
    meta = (META.format(name="foo", version="1.0") + "Requires-Python: >=3.8\u00a0\n").encode()
    path = wheel(tmp_path, "foo-1.0-py3-none-any.whl", meta)
    with pytest.raises(dist.Refused, match="Requires-Python"):
        dist.read(path, path.name)
    latin = wheel(tmp_path, "foo-2.0-py3-none-any.whl", META.format(name="foo", version="2.0").encode() + b"Summary: \xe9\n")
    with pytest.raises(dist.Refused, match="not UTF-8"):
        dist.read(latin, latin.name)


def _encrypt(path, member):
    """Set the 'encrypted' flag of one member in both of its zip headers, as a zip made with
    a password has it (zipfile cannot write one)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data[info.header_offset + 6] |= 1
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(data[at + 28: at + 30], "little")
        if data[at + 46: at + 46 + length] == member.encode():
            data[at + 8] |= 1
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_an_encrypted_member_is_refused_not_raised(tmp_path):
    path = wheel(tmp_path, "foo-1.0-py3-none-any.whl", META.format(name="foo", version="1.0"))
    _encrypt(path, "foo-1.0.dist-info/METADATA")
    with pytest.raises(dist.Refused, match="encrypted"):
        dist.read(path, path.name)
    # Another encrypted member is not read at all: the file is what its metadata says.
    other = wheel(tmp_path, "foo-2.0-py3-none-any.whl", META.format(name="foo", version="2.0"), "foo-2.0.dist-info")
    _encrypt(other, "foo/__init__.py")
    assert dist.read(other, other.name).version == "2.0"


def test_a_bz2_bomb_stops_at_its_bound(tmp_path):
    """A small tar with PKG-INFO, then bz2 streams of zeros: a few KB that unpack to GBs. The
    reader stops at the decompressed bound (the default: 50 times the file, at least 256 MiB)."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        meta = META.format(name="foo", version="1.0").encode()
        info = tarfile.TarInfo("foo-1.0/PKG-INFO")
        info.size = len(meta)
        t.addfile(info, io.BytesIO(meta))
    stream = bz2.compress(b"\0" * (45 << 20))
    path = tmp_path / "foo-1.0.tar.bz2"
    path.write_bytes(bz2.compress(inner.getvalue()[:-1024]) + stream * 8)
    assert path.stat().st_size < 10_000
    with pytest.raises(dist.Refused, match="unpacks to more than"):
        dist.read(path, path.name)


def test_member_counts_are_bounded_before_they_fill_memory(tmp_path):
    limits = dist.Limits(members=50)
    meta = META.format(name="foo", version="1.0").encode()
    many = tar(tmp_path, "foo-1.0.tar.gz", [("foo-1.0/PKG-INFO", meta)] + [(f"foo-1.0/{i}", b"") for i in range(60)])
    with pytest.raises(dist.Refused, match="more than 50 members"):
        dist.read(many, many.name, limits)
    zipped = wheel(tmp_path, "foo-1.0-py3-none-any.whl", meta, extra=[(f"f{i}", "") for i in range(60)])
    with pytest.raises(dist.Refused, match="more than 50 members"):
        dist.read(zipped, zipped.name, limits)
    assert dist.read(zipped, zipped.name).version == "1.0"


def test_large_metadata_and_slow_reads_are_bounded(tmp_path):
    big = wheel(tmp_path, "foo-1.0-py3-none-any.whl", META.format(name="foo", version="1.0") + "X: " + "y" * 3000 + "\n")
    with pytest.raises(dist.Refused, match="larger than 2000 bytes"):
        dist.read(big, big.name, dist.Limits(metadata_bytes=2000))
    with pytest.raises(dist.Refused, match="not read within"):
        dist.read(big, big.name, dist.Limits(seconds=-1))


def test_a_cut_file_is_incomplete(tmp_path):
    meta = META.format(name="foo", version="1.0").encode()
    whole = tar(tmp_path, "foo-1.0.tar.gz", [("foo-1.0/PKG-INFO", meta), ("foo-1.0/data", b"x" * 5000)])
    cut = tmp_path / "foo-2.0.tar.gz"
    cut.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(dist.Incomplete):
        dist.read(cut, "foo-1.0.tar.gz")
    w = wheel(tmp_path, "foo-1.0-py3-none-any.whl", meta)
    (tmp_path / "cut.whl").write_bytes(w.read_bytes()[:200])
    with pytest.raises(dist.Incomplete):
        dist.read(tmp_path / "cut.whl", w.name)
