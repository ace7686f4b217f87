"""The upload check nginx runs before pypiserver (roles/nginx_proxy/files/cheeseshop_upload.lua),
run here in LuaJIT 2.1 (lupa), the Lua nginx runs.

pypiserver reads the same form with Python's cgi.FieldStorage and keeps the last file of a
field. The check is only safe if, for every body it lets through, cgi reads the same files:
otherwise a body could show the check one file name and pypiserver another. So beside the
known attacks, every body the check accepts here is read again with cgi, also for thousands of
mutations of real clients' forms, and the two must agree.
"""
import io
import random
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import cgi  # what pypiserver's bottle reads forms with (legacy-cgi on Python 3.13)

from lupa import luajit21

LUA_DIR = Path(__file__).resolve().parents[3] / "roles" / "nginx_proxy" / "files"
BOUNDARY = "b0undary-1234"
TYPE = f"multipart/form-data; boundary={BOUNDARY}"
GOOD = "cheeseshop_probe-1.0.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def check():
    lua = luajit21.LuaRuntime(encoding=None)
    lua.execute(f'package.path = "{LUA_DIR}/?.lua;" .. package.path'.encode())
    module = lua.require(b"cheeseshop_upload")

    def run(body, content_type=TYPE, chunk_size=None):
        answer = module.body_problem(content_type.encode(), body, chunk_size)
        # lupa gives one value as itself, several as a tuple.
        problem, fields, files = answer if isinstance(answer, tuple) else (answer, None, None)
        if problem is not None:
            return problem.decode(errors="replace"), None, None
        read_fields = {k.decode(): v.decode(errors="replace") for k, v in fields.items()} if fields else {}
        read_files = [(f[b"field"].decode(errors="replace"), f[b"filename"].decode(errors="replace"))
                      for f in files.values()] if files else []
        return None, read_fields, read_files
    return run


def part(name, value, filename=None, extra=b"", newline=b"\r\n"):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = b"Content-Disposition: " + disposition.encode() + newline
    if filename:
        head += b"Content-Type: application/octet-stream" + newline
    return head + extra + newline + value


def form(parts, boundary=BOUNDARY, newline=b"\r\n"):
    dash = b"--" + boundary.encode()
    return dash + newline + (newline + dash + newline).join(parts) + newline + dash + b"--" + newline


def upload(filename=GOOD, name="cheeseshop-probe", version="1.0.0", content=b"PK\x03\x04 wheel bytes"):
    """A form as twine sends one: metadata fields first, the file last."""
    return form([part(":action", b"file_upload"), part("protocol_version", b"1"), part("name", name.encode()),
                 part("version", version.encode()), part("description", b"A long README\r\n--not-it\r\n"),
                 part("content", content, filename)])


def cgi_read(body, content_type=TYPE):
    """What pypiserver gets: (form fields, file parts) as bottle builds them from cgi."""
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = cgi.FieldStorage(fp=io.BytesIO(body), environ=environ, keep_blank_values=True, encoding="utf8")
    fields, files = {}, []
    for item in storage.list or []:
        if item.filename is None:
            fields[item.name] = item.value  # bottle's FormsDict.get: the last one wins
        else:
            files.append((item.name, item.filename))
    return fields, files


def test_the_forms_real_clients_send_are_accepted_also_read_in_small_chunks(check):
    for chunk_size in (None, 1, 7, 64, 4096):
        problem, fields, files = check(upload(), chunk_size=chunk_size)
        assert problem is None, (chunk_size, problem)
        assert fields == {":action": "file_upload", "name": "cheeseshop-probe", "version": "1.0.0"}
        assert files == [("content", GOOD)]
    # Project names and versions compare as PEP 503 does; sdists and signatures pass too.
    assert check(upload(name="Cheeseshop.Probe"))[0] is None
    assert check(upload(filename="cheeseshop-probe-1.0.0.tar.gz"))[0] is None
    signed = form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"), part("version", b"1.0.0"),
                   part("content", b"x", GOOD), part("gpg_signature", b"sig", GOOD + ".asc")])
    assert check(signed)[0] is None
    # A removal (no file) and a form that is not multipart are pypiserver's alone.
    assert check(form([part(":action", b"remove_pkg"), part("name", b"x"), part("version", b"1")]))[0] is None
    assert check(b":action=remove_pkg&name=x&version=1", "application/x-www-form-urlencoded")[0] is None


FORMS = Path(__file__).resolve().parent / "forms"
CLIENT_FORMS = sorted(FORMS.glob("*.form"))


@pytest.mark.parametrize("path", CLIENT_FORMS, ids=[p.stem for p in CLIENT_FORMS])
def test_what_twine_uv_and_poetry_send_is_accepted_and_read_as_cgi_reads_it(check, path):
    """Forms captured from the clients themselves (a local HTTP server recorded the bodies):
    project "Cap.Probe" 1.0.0rc1, whose README holds a line that looks like a delimiter."""
    body, content_type = path.read_bytes(), path.with_suffix(".type").read_text().strip()
    problem, fields, files = check(body, content_type)
    assert problem is None, problem
    assert fields == {":action": "file_upload", "name": "Cap.Probe", "version": "1.0.0rc1"}
    suffix = ".whl" if path.stem.endswith("wheel") else ".tar.gz"
    assert len(files) == 1 and files[0][0] == "content" and files[0][1].endswith(suffix), files
    assert cgi_read(body, content_type)[1] == files


REFUSED = {
    "hidden dot-file": upload(filename="." + GOOD),
    "another project's name": upload(name="another-project"),
    "another version": upload(version="2.0.0"),
    "a name that only starts like the project's": upload(name="cheeseshop"),
    "not a distribution": upload(filename="cheeseshop_probe-1.0.0.exe"),
    "a path": upload(filename="../" + GOOD),
    "a quote in the file name": upload(filename='x\\"' + GOOD),
    "two content files": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                               part("version", b"1.0.0"), part("content", b"x", GOOD),
                               part("content", b"x", "." + GOOD)]),
    "the name twice": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                            part("version", b"1.0.0"), part("content", b"x", GOOD), part("name", b"other")]),
    "no content file": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                             part("version", b"1.0.0")]),
    "a signature for another file": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                                          part("version", b"1.0.0"), part("content", b"x", GOOD),
                                          part("gpg_signature", b"s", "other.asc")]),
    # Bodies cgi reads differently from a plain reader: each would hide a second content file.
    "a folded disposition": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                                  part("version", b"1.0.0"), part("content", b"x", GOOD),
                                  b'Content-Disposition: form-data; name="description"\r\n'
                                  b' ; name="content"; filename=".hidden.whl"\r\n\r\nx']),
    "a part's own Content-Length": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                                         part("version", b"1.0.0"), part("content", b"x", GOOD),
                                         part("description", b"abcd--" + BOUNDARY.encode(),
                                              extra=b"Content-Length: 4\r\n")]),
    "a second disposition": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                                  part("version", b"1.0.0"),
                                  part("content", b"x", GOOD,
                                       extra=b'Content-Disposition: form-data; name="x"; filename=".h.whl"\r\n')]),
    "a nested multipart part": form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"),
                                     part("version", b"1.0.0"),
                                     b'Content-Disposition: form-data; name="content"; filename="' + GOOD.encode()
                                     + b'"\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\nx']),
    "filename*": upload().replace(b'filename="', b"filename*=UTF-8''", 1),
    "an unquoted file name": upload().replace(f'filename="{GOOD}"'.encode(), f"filename={GOOD}".encode()),
    "a preamble": b"preamble\r\n" + upload(),
    "no closing delimiter": upload()[:-len(f"--{BOUNDARY}--\r\n")],
    "a field over 4 KiB": upload(version="1" * 5000),
}


@pytest.mark.parametrize("body", REFUSED.values(), ids=REFUSED.keys())
def test_refused(check, body):
    problem, _, _ = check(body)
    assert problem, problem


@pytest.mark.parametrize("content_type", [
    f"multipart/form-data; boundary={BOUNDARY}; boundary=other",
    "multipart/form-data",
    'multipart/form-data; boundary="a\\"b"',
    "multipart/form-data; boundary=" + "x" * 71,
])
def test_a_boundary_cgi_could_read_otherwise_is_refused(check, content_type):
    assert check(upload(), content_type)[0]


def test_a_hidden_part_behind_bare_line_feeds_is_seen(check):
    """cgi ends a line at LF alone: a delimiter inside a field that a CRLF-only reader would skip
    opens a part for cgi. Here it opens one for the check too, and the second content file
    is refused."""
    hidden = (b"README\n--" + BOUNDARY.encode() + b'\nContent-Disposition: form-data; name="content"; '
              b'filename=".hidden.whl"\n\nsecret')
    body = form([part(":action", b"file_upload"), part("name", b"cheeseshop-probe"), part("version", b"1.0.0"),
                 part("content", b"x", GOOD), part("description", hidden)])
    assert ("content", ".hidden.whl") in cgi_read(body)[1]
    assert check(body)[0]


def mutations(body, rng, boundary=BOUNDARY):
    """Small edits of a body at random places: line ends, delimiters, whitespace, headers."""
    dash = b"--" + boundary.encode()
    pieces = [b"\r\n", b"\n", b"\r", dash, b"\n" + dash + b"\n", b"\r\n" + dash + b"--\r\n",
              b" ", b"\t", b'"', b"\\", b";",
              b'Content-Disposition: form-data; name="content"; filename=".h.whl"\r\n\r\n',
              b"Content-Length: 3\r\n", b"\r\n\r\n", b"--"]
    data = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.5:
            data[at:at] = rng.choice(pieces)
        elif action < 0.8 and at < len(data):
            del data[at:at + rng.randint(1, 3)]
        else:
            data[at:at] = bytes([rng.randrange(256)])
    return bytes(data)


def test_every_body_the_check_lets_through_cgi_reads_alike(check):
    """The differential: 20,000 mutations of valid forms (CRLF and LF, several shapes). Whatever
    the check accepts, cgi must find the same files, and the same action, name and version."""
    rng = random.Random(27)
    seeds = [upload(), upload(filename="cheeseshop-probe-1.0.0.tar.gz"),
             form([part(":action", b"file_upload", newline=b"\n"), part("name", b"cheeseshop-probe", newline=b"\n"),
                   part("version", b"1.0.0", newline=b"\n"), part("content", b"x", GOOD, newline=b"\n")],
                  newline=b"\n")]
    seeds = [(seed, TYPE) for seed in seeds] + [
        (path.read_bytes(), path.with_suffix(".type").read_text().strip()) for path in CLIENT_FORMS]
    accepted = 0
    for n in range(20000):
        seed, content_type = rng.choice(seeds)
        body = mutations(seed, rng, content_type.split("boundary=", 1)[1])
        problem, fields, files = check(body, content_type, chunk_size=rng.choice([None, 5, 64]))
        if problem is not None or fields.get(":action") != "file_upload":
            continue
        accepted += 1
        cgi_fields, cgi_files = cgi_read(body, content_type)
        assert cgi_files == files, (n, body)
        for key in (":action", "name", "version"):
            assert cgi_fields.get(key) == fields.get(key), (n, key, body)
    assert accepted > 800, accepted  # the mutations left enough bodies valid to compare
