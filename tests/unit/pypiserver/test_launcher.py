"""The upload path's launcher (roles/pypiserver/files/cheeseshop-pypiserver), without nginx: its
store, its owners and tokens, and its one parse of the form, against real files in tmp_path,
the real page service on its socket, and the pypiserver (with its Bottle) the role pins.

Every upload is written by an attacker: a refused one leaves nothing behind, and a stored one
is on a page before the answer leaves.
"""
import base64
import hashlib
import hmac
import io
import json
import os
import time
import zipfile
from types import SimpleNamespace

import pytest

from conftest import load_program

launcher = load_program("pypiserver", "cheeseshop-pypiserver")
dist = launcher.dist
HTTPError, request = launcher.HTTPError, launcher.request


def wheel_bytes(name, version, metadata_name=None):
    """A wheel whose METADATA names metadata_name (name unless given)."""
    buffer = io.BytesIO()
    stem = name.replace("-", "_")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{stem}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {metadata_name or name}\nVersion: {version}\n")
        archive.writestr(f"{stem}/__init__.py", "x = 1\n")
    return buffer.getvalue()


def multipart(fields, files):
    """A multipart/form-data body, as twine sends it: (content type, bytes)."""
    boundary = "cheeseshop-test-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def bind(method="GET", user=("alice", "secret"), body=b"", content_type=None):
    """Bottle's request for this thread, as pypiserver sees one nginx passed on."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/", "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "HTTP_X_REAL_IP": "192.0.2.7"}
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    if user:
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    request.bind(environ)


@pytest.fixture
def index(service, monkeypatch):
    """The launcher of index main, its packages directory served by the real page service."""
    monkeypatch.setattr(launcher, "INDEX", "main")
    monkeypatch.setattr(launcher, "PAGES_SOCKET", str(service.socket))
    monkeypatch.setattr(launcher, "_app", SimpleNamespace(config=SimpleNamespace(
        overwrite=False, roots=[service.packages])))
    bind("POST")
    return service


def listed(service, project):
    page = service.pages / "simple" / project / "index.json"
    return [f["filename"] for f in json.loads(page.read_text())["files"]] if page.exists() else []


def leftovers(service):
    return sorted(name for name in os.listdir(service.packages) if name.startswith("."))


def store(service, filename, data):
    launcher.store(io.BytesIO(data), str(service.packages), filename, dist.parse_filename(filename))


def test_an_upload_is_on_its_page_when_store_returns_and_its_release_takes_no_second_file(index):
    store(index, "widgets-1.0-py3-none-any.whl", wheel_bytes("widgets", "1.0"))
    assert listed(index, "widgets") == ["widgets-1.0-py3-none-any.whl"]
    assert leftovers(index) == []
    # The same name, a build tag of the same tags, another spelling of the same release: 409.
    for again, says in [("widgets-1.0-py3-none-any.whl", "File already exists: widgets-1.0-py3-none-any.whl"),
                        ("widgets-1.0-1-py3-none-any.whl", "a file with these tags of this release"),
                        ("Widgets-1.0.0-py3-none-any.whl", "a file with these tags of this release")]:
        with pytest.raises(HTTPError) as refused:
            store(index, again, wheel_bytes("widgets", "1.0"))
        assert refused.value.status_code == 409 and says in refused.value.body, refused.value.body
    # Another tag set, and the release's one sdist, are new files of it.
    store(index, "widgets-1.0-py2.py3-none-any.whl", wheel_bytes("widgets", "1.0"))
    assert len(listed(index, "widgets")) == 2
    assert leftovers(index) == []


def test_a_file_whose_metadata_names_another_project_is_refused_and_nothing_is_left(index):
    with pytest.raises(HTTPError) as refused:
        store(index, "widgets-2.0-py3-none-any.whl", wheel_bytes("widgets", "2.0", metadata_name="gadgets"))
    assert refused.value.status_code == 400 and "nothing was stored" in refused.value.body
    assert os.listdir(index.packages) == [] and listed(index, "widgets") == []


def test_a_truncated_file_is_refused_and_nothing_is_left(index):
    data = wheel_bytes("widgets", "3.0")
    with pytest.raises(HTTPError) as refused:
        store(index, "widgets-3.0-py3-none-any.whl", data[: len(data) // 2])
    assert refused.value.status_code == 400
    assert os.listdir(index.packages) == []


def test_without_the_page_service_an_upload_is_a_503_and_nothing_is_kept(index, monkeypatch, tmp_path):
    monkeypatch.setattr(launcher, "PAGES_SOCKET", str(tmp_path / "no-service.sock"))
    with pytest.raises(HTTPError) as refused:
        store(index, "widgets-4.0-py3-none-any.whl", wheel_bytes("widgets", "4.0"))
    assert refused.value.status_code == 503 and "Nothing was stored" in refused.value.body
    assert refused.value.headers["Retry-After"] == "30"
    assert os.listdir(index.packages) == []


def test_rename_new_never_replaces_a_file(tmp_path):
    (tmp_path / "first").write_bytes(b"first")
    (tmp_path / "second").write_bytes(b"second")
    with pytest.raises(OSError) as error:
        launcher.rename_new(str(tmp_path / "second"), str(tmp_path / "first"))
    assert error.value.errno == 17  # EEXIST
    assert (tmp_path / "first").read_bytes() == b"first" and (tmp_path / "second").exists()


def test_the_form_is_checked_against_the_file_before_anything_is_written(index):
    data = wheel_bytes("widgets", "5.0")
    cases = [
        ({"name": "gadgets", "version": "5.0"}, {"content": ("widgets-5.0-py3-none-any.whl", data)},
         "the form names the project 'gadgets'"),
        ({"name": "widgets", "version": "5.1"}, {"content": ("widgets-5.0-py3-none-any.whl", data)},
         "the form gives the version '5.1'"),
        ({"name": "widgets", "version": "5.0"}, {"content": ("../widgets-5.0-py3-none-any.whl", data)},
         "is not a distribution file name"),
        ({"name": "widgets", "version": "5.0"}, {"content": ("widgets-5.0-py3-none-any.whl", data),
                                                 "gpg_signature": ("widgets-5.0-py3-none-any.whl.asc", b"sig")},
         "GPG signatures are not kept"),
        ({"name": "widgets", "version": "5.0"}, {}, "the form has no 'content' file"),
    ]
    for fields, files, says in cases:
        content_type, body = multipart(fields, files)
        bind("POST", body=body, content_type=content_type)
        with pytest.raises(HTTPError) as refused:
            launcher._file_upload()
        assert refused.value.status_code == 400 and says in refused.value.body, (says, refused.value.body)
    assert os.listdir(index.packages) == []
    # The same form, right: stored and listed.
    content_type, body = multipart({"name": "Widgets", "version": "5.0.0"},
                                   {"content": ("widgets-5.0-py3-none-any.whl", data)})
    bind("POST", body=body, content_type=content_type)
    launcher._file_upload()
    assert listed(index, "widgets") == ["widgets-5.0-py3-none-any.whl"]


def test_a_form_bottle_cannot_read_is_a_400_and_not_a_500():
    boundary = "b"
    # A bare CR inside a part's headers (the second review's third body shape).
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="content";\r filename="x-1.0.tar.gz"\r\n\r\n'
            f"data\r\n--{boundary}--\r\n").encode()
    bind("POST", body=body, content_type=f"multipart/form-data; boundary={boundary}")
    with pytest.raises(HTTPError) as refused:
        launcher.read_form()
    assert refused.value.status_code == 400 and "the form cannot be read" in refused.value.body


def test_every_error_answer_is_one_line_of_plain_text():
    bind()
    text = launcher.plain_error(HTTPError(409, "File already exists: x-1.0.tar.gz"))
    assert text == "409 File already exists: x-1.0.tar.gz\n"
    assert launcher.response.content_type == "text/plain; charset=utf-8"
    assert launcher.plain_error(HTTPError(500)) == "500 Internal Server Error\n"


@pytest.fixture
def owners(tmp_path, monkeypatch):
    path = tmp_path / "owners.json"
    path.write_text(json.dumps({"owners": [{"projects": ["acme-*"], "uploaders": ["alice", "ci-acme"]}],
                                "closed": {"acme-legacy": "archived"}}))
    monkeypatch.setattr(launcher, "OWNERS", str(path))
    monkeypatch.setattr(launcher, "_owners_seen", (None, ([], {})))
    return path


@pytest.mark.parametrize("user,project,status", [
    (("alice", "pw"), "Acme_Tools", None),                    # an owner, any spelling
    (("bob", "pw"), "acme-tools", 403),                       # not among the owners
    (("bob", "pw"), "other", None),                           # no entry: every uploader
    (("x", "cheeseshop_ci-acme." + "a" * 32), "acme-tools", None),         # an owner's token
    (("x", "cheeseshop_oidc-ci-acme-1999999999-0123abcd." + "a" * 64), "acme-tools", None),  # minted: its publisher
    (("x", "cheeseshop_ci-other." + "a" * 32), "acme-tools", 403),
    (("alice", "pw"), "acme.legacy", 403),                    # archived: nobody
])
def test_owners_decide_who_uploads_a_project(owners, user, project, status):
    bind("POST", user=user)
    if status is None:
        launcher.check_owner(project)
    else:
        with pytest.raises(HTTPError) as refused:
            launcher.check_owner(project)
        assert refused.value.status_code == status


def test_an_owners_file_that_cannot_be_read_takes_no_upload_and_a_change_is_read(owners):
    bind("POST", user=("bob", "pw"))
    owners.write_text("{not json")
    with pytest.raises(HTTPError) as refused:
        launcher.check_owner("other")
    assert refused.value.status_code == 503
    owners.write_text(json.dumps({"owners": [{"projects": ["other"], "uploaders": ["bob"]}]}))
    launcher.check_owner("other")


def test_upload_tokens_match_their_hash_until_they_expire_and_the_file_is_read_again(tmp_path, monkeypatch):
    path = tmp_path / "tokens"
    monkeypatch.setattr(launcher, "TOKENS", str(path))
    monkeypatch.setattr(launcher, "_tokens_seen", (None, {}))
    monkeypatch.setattr(launcher, "PAGES_SOCKET", str(tmp_path / "none.sock"))
    good, late = "cheeseshop_ci." + "a" * 40, "cheeseshop_old." + "b" * 40
    digest = {t: hashlib.sha256(t.encode()).hexdigest() for t in (good, late)}
    path.write_text(f"ci:{digest[good]}:{int(time.time()) + 3600}\nold:{digest[late]}:{int(time.time()) - 1}\n"
                    "garbage line\n")
    assert launcher.token_matches(good)
    assert not launcher.token_matches(good[:-1] + "b")
    assert not launcher.token_matches(late)
    assert not launcher.token_matches("cheeseshop_unknown." + "a" * 40)
    path.write_text("")  # revoked: the next check reads the file again
    assert not launcher.token_matches(good)


def test_a_minted_token_is_the_hmac_of_its_name_and_expires_at_the_time_it_names(tmp_path, monkeypatch):
    key = tmp_path / "minted.key"
    key.write_text("k" * 64 + "\n")
    monkeypatch.setattr(launcher, "MINTED_KEY", str(key))
    monkeypatch.setattr(launcher, "_key_seen", (None, b""))

    def minted(expires):
        name = f"oidc-ci-acme-{expires}-0123abcd"
        return name, f"cheeseshop_{name}." + hmac.new(b"k" * 64, name.encode(), "sha256").hexdigest()
    name, token = minted(int(time.time()) + 600)
    assert launcher.token_matches(token)
    assert not launcher.token_matches(token[:-1] + ("0" if token[-1] != "0" else "1"))
    name, token = minted(int(time.time()) - 1)
    assert not launcher.token_matches(token)
    key.unlink()  # no key: no minted token is taken
    assert not launcher.token_matches(minted(int(time.time()) + 600)[1])


def test_options_are_read_before_pypi_server_s_own(monkeypatch):
    for name in ("INDEX", "PAGES_SOCKET", "TOKENS", "OWNERS", "MINTED_KEY"):
        monkeypatch.setattr(launcher, name, None)
    rest = launcher.options(["--index", "main", "--pages-socket", "/run/p.sock", "--tokens", "/t", "run", "-p", "8080"])
    assert rest == ["run", "-p", "8080"]
    assert (launcher.INDEX, launcher.PAGES_SOCKET, launcher.TOKENS, launcher.OWNERS) == ("main", "/run/p.sock", "/t", None)
    monkeypatch.setattr(launcher, "INDEX", None)
    with pytest.raises(SystemExit):
        launcher.options(["run"])
