"""The page generator (roles/pages/files/cheeseshop-pages), on real files in a temporary
directory: the pages it writes, what it leaves out, and the service with real inotify and its
unix socket."""
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import zipfile


from conftest import load_program, program_path, wait_for

PROGRAM = program_path("pages", "cheeseshop-pages")
pages = load_program("pages", "cheeseshop-pages")

def wheel(d, name, version, requires=None):
    """A wheel with its METADATA (and a module), written into d; its file name and metadata."""
    fn = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + (f"Requires-Python: {requires}\n" if requires else "")
    with zipfile.ZipFile(d / fn, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
        z.writestr(f"{name.replace('-', '_')}/__init__.py", "x = 1\n" * 1000)
    return fn, meta

def sdist(d, name, version):
    """An sdist (.tar.gz) with its PKG-INFO, written into d; its file name."""
    fn = f"{name}-{version}.tar.gz"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    with tarfile.open(d / fn, "w:gz") as t:
        info = tarfile.TarInfo(f"{name}-{version}/PKG-INFO"); info.size = len(meta)
        t.addfile(info, io.BytesIO(meta))
    return fn

def test_pages_from_a_rebuild_and_each_change(tmp_path):
    pk, pg = tmp_path / "packages", tmp_path / "pages"; pk.mkdir()
    fn, meta = wheel(pk, "Foo.Bar", "1.0", ">=3.8,<4")
    sd = sdist(pk, "foo-bar", "0.9")
    (pk / ".hidden-1.0.tar.gz").write_bytes(b"x")
    idx = pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg),
                       "yanked": [{"project": "foo_bar", "version": "0.9", "reason": "broken <b>"}]})
    assert idx.rebuild() > 0
    page = json.loads((pg / "simple/foo-bar/index.json").read_text())
    assert page["meta"]["api-version"] == "1.4" and page["versions"] == ["0.9", "1.0"]
    byname = {f["filename"]: f for f in page["files"]}
    assert byname[fn]["requires-python"] == ">=3.8,<4"
    assert byname[fn]["core-metadata"]["sha256"] == hashlib.sha256(meta.encode()).hexdigest()
    assert byname[fn]["hashes"]["sha256"] == hashlib.sha256((pk / fn).read_bytes()).hexdigest()
    assert byname[sd]["yanked"] == "broken <b>" and byname[fn]["yanked"] is False
    assert (pg / "metadata" / (fn + ".metadata")).read_text() == meta
    h = (pg / "simple/foo-bar/index.html").read_text()
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in h and 'data-yanked="broken &lt;b&gt;"' in h
    assert f'href="../../packages/{fn}#sha256=' in h
    root = json.loads((pg / "simple/index.json").read_text())
    assert root["projects"] == [{"name": "foo-bar"}]
    assert idx.rebuild() == 0  # nothing changed
    # a new project appears
    fn2, _ = wheel(pk, "baz", "2.0")
    assert idx.refresh_file(fn2) > 0
    assert [p["name"] for p in json.loads((pg / "simple/index.json").read_text())["projects"]] == ["baz", "foo-bar"]
    # a truncated wheel is not listed
    data = (pk / fn2).read_bytes(); (pk / "baz-3.0-py3-none-any.whl").write_bytes(data[: len(data) // 2])
    idx.refresh_file("baz-3.0-py3-none-any.whl")
    assert [f["filename"] for f in json.loads((pg / "simple/baz/index.json").read_text())["files"]] == [fn2]
    # truncated sdist too
    good = (pk / sd).read_bytes(); (pk / "foo-bar-0.8.tar.gz").write_bytes(good[:-10])
    idx.refresh_file("foo-bar-0.8.tar.gz")
    assert "foo-bar-0.8.tar.gz" not in (pg / "simple/foo-bar/index.html").read_text()
    # removal of the last file of a project removes its pages and its root entry
    os.unlink(pk / fn2); os.unlink(pk / "baz-3.0-py3-none-any.whl")
    idx.refresh_file(fn2); idx.refresh_file("baz-3.0-py3-none-any.whl")
    assert not (pg / "simple/baz").exists()
    assert [p["name"] for p in json.loads((pg / "simple/index.json").read_text())["projects"]] == ["foo-bar"]
    # a fresh process trusts the state for unchanged files
    idx2 = pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)})
    idx2.rebuild()
    assert "data-yanked" not in (pg / "simple/foo-bar/index.html").read_text()
    assert not list((pg / "simple/foo-bar").glob(".*"))




def test_service_lists_files_that_arrive_and_answers_on_its_socket(service):
    pk, pg, config, sock = service.packages, service.pages, service.config, service.socket
    fn, _ = wheel(pk, "arrives", "1.0")
    page = pg / "simple" / "arrives" / "index.html"
    wait_for(lambda: page.exists() and fn in page.read_text(), "a copied-in file listed")
    os.unlink(pk / fn)
    wait_for(lambda: not page.exists(), "a deleted file's page removed")

    def ask(line):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))
            client.sendall(line.encode() + b"\n")
            return client.recv(4096).decode()
    fn, _ = wheel(pk, "asked", "2.0")
    assert ask(f"file main {fn}") == "ok\n"
    assert fn in (pg / "simple" / "asked" / "index.html").read_text()
    assert ask("file main ../../etc/passwd").startswith("error")
    assert ask("file other x-1.0.tar.gz").startswith("error")
    # A rebuild by hand goes through the service, which holds the lock.
    out = subprocess.run([sys.executable, str(PROGRAM), "rebuild", str(config)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out)["projects"] == 1


def test_the_service_sees_a_file_time_set_after_it_was_written(service):
    """cp -p, tar and rsync write a file, close it, then set its time: an attribute change,
    with no further write. The page must follow it; a file read between the two was seen to
    stay unlisted ("changed while it was read") until the next rebuild."""
    pk, pg = service.packages, service.pages
    fn, _ = wheel(pk, "preserved", "1.0")
    page = pg / "simple" / "preserved" / "index.json"

    def upload_time():
        files = json.loads(page.read_text())["files"] if page.exists() else []
        return [f["upload-time"] for f in files if f["filename"] == fn]
    wait_for(lambda: len(upload_time()) == 1, "the file listed")
    old = 1577836800  # 2020-01-01T00:00:00Z, the time cp -p would carry over
    os.utime(pk / fn, (old, old))
    wait_for(lambda: upload_time() == ["2020-01-01T00:00:00.000000Z"], "the page to carry the file's new time")


def test_a_project_name_from_metadata_never_leaves_the_pages(tmp_path):
    """A wheel whose metadata names its project '../../x' is listed nowhere, and no page is
    written outside the pages directory."""
    pk, pg = tmp_path / "packages", tmp_path / "pages"
    pk.mkdir()
    with zipfile.ZipFile(pk / "sneaky-1.0-py3-none-any.whl", "w") as z:
        z.writestr("sneaky-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: ../../x\nVersion: 1.0\n")
    pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)}).rebuild()
    assert sorted(p.name for p in (pg / "simple").iterdir()) == ["index.html", "index.json"]
    assert not (tmp_path / "x").exists()


def test_a_file_whose_metadata_names_another_project_is_listed_nowhere(tmp_path, capsys):
    """foo's file name with bar's metadata: on neither page (pip would refuse it on either)."""
    pk, pg = tmp_path / "packages", tmp_path / "pages"
    pk.mkdir()
    fn, _ = wheel(pk, "bar", "1.0")
    (pk / fn).rename(pk / "foo-1.0-py3-none-any.whl")
    sd = sdist(pk, "Foo_Bar", "2.0")  # another spelling of one name is the same project
    pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)}).rebuild()
    assert sorted(p.name for p in (pg / "simple").iterdir()) == ["foo-bar", "index.html", "index.json"]
    assert sd in (pg / "simple/foo-bar/index.html").read_text()
    assert "its metadata names the project 'bar', its file name 'foo'" in capsys.readouterr().err


def test_the_root_page_from_kept_rows_is_the_page_made_whole():
    """The root page is joined from rows made once per project (a new project rewrites it
    before its upload is answered). Its JSON is byte for byte json.dumps of the whole page, and
    a kept row is reused, so the page stays what a full render gives as projects come and go."""
    names = {"a-b": set(), "z<y": set(), "m.n_o": set(), "ünï": set()}
    rows = {}
    for projects in (names, {**names, "b": set()}, {"b": set()}, {}):
        page_html, page_json = pages.root_pages(projects, rows)
        whole = {"meta": {"api-version": pages.API_VERSION}, "projects": [{"name": n} for n in sorted(projects)]}
        assert page_json == json.dumps(whole, sort_keys=True) + "\n"
        assert page_html == pages.root_pages(projects)[0]
        assert [line.strip() for line in page_html.splitlines() if "<a " in line] == [
            f'<a href="{n.replace("<", "&lt;")}/">{n.replace("<", "&lt;")}</a><br>' for n in sorted(projects)]
    assert set(rows) == set(names) | {"b"}


def test_project_status_marks_the_pages_and_quarantine_lists_no_file(tmp_path):
    """PEP 792 (simple API 1.4): the HTML metas and the JSON key; a quarantined project's pages
    list no file, and the files come back when its entry goes."""
    pk, pg = tmp_path / "packages", tmp_path / "pages"; pk.mkdir()
    old, _ = wheel(pk, "old-lib", "1.0")
    bad, _ = wheel(pk, "Bad_Lib", "2.0")
    wheel(pk, "fine", "1.0")
    statuses = [{"project": "Old.Lib", "status": "archived", "reason": 'use "new-lib" <now>'},
                {"project": "bad-lib", "status": "quarantined"}, {"project": "fine", "status": "active"}]
    idx = pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg), "project_status": statuses})
    idx.rebuild()
    archived = json.loads((pg / "simple/old-lib/index.json").read_text())
    assert archived["project-status"] == {"status": "archived", "reason": 'use "new-lib" <now>'}
    assert [f["filename"] for f in archived["files"]] == [old]
    html_page = (pg / "simple/old-lib/index.html").read_text()
    assert '<meta name="pypi:project-status" content="archived">' in html_page
    assert '<meta name="pypi:project-status-reason" content="use &quot;new-lib&quot; &lt;now&gt;">' in html_page
    quarantined = json.loads((pg / "simple/bad-lib/index.json").read_text())
    assert quarantined["project-status"] == {"status": "quarantined"} and quarantined["files"] == []
    assert bad not in (pg / "simple/bad-lib/index.html").read_text()
    assert "project-status" not in json.loads((pg / "simple/fine/index.json").read_text())
    assert "pypi:project-status" not in (pg / "simple/fine/index.html").read_text()
    # Its entry removed (a new configuration, then the rebuild the pages role runs): listed again.
    pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)}).rebuild()
    assert [f["filename"] for f in json.loads((pg / "simple/bad-lib/index.json").read_text())["files"]] == [bad]


def test_the_audit_log_has_one_line_per_stored_removed_or_refused_file(tmp_path):
    """The service writes the line before it answers ok, with the sha256 and size of its own
    read; fields the upload path may not set are dropped; no log, no ok."""
    pk, pg = tmp_path / "packages", tmp_path / "pages"; pk.mkdir()
    idx = pages.Index({"name": "main", "packages_dir": str(pk), "pages_dir": str(pg)})
    idx.rebuild()
    log = tmp_path / "audit.log"
    audit = pages.Audit(str(log))
    fn, _ = wheel(pk, "audited", "1.0")
    said = json.dumps({"identity": "token:ci", "address": "192.0.2.7", "action": "upload", "result": "stored",
                       "sha256": "forged", "extra": "x" * 10})
    assert pages.answer({"main": idx}, f"file main {fn} {said}", audit) == "ok\n"
    stored = json.loads(log.read_text().splitlines()[-1])
    assert stored["sha256"] == hashlib.sha256((pk / fn).read_bytes()).hexdigest()
    assert stored["size"] == (pk / fn).stat().st_size and "extra" not in stored
    assert (stored["index"], stored["identity"], stored["address"], stored["file"]) == ("main", "token:ci", "192.0.2.7", fn)

    refused = json.dumps({"identity": "bob", "action": "upload", "file": "audited-2.0.tar.gz", "result": "403 owners"})
    assert pages.answer({"main": idx}, f"audit main {refused}", audit) == "ok\n"
    removal = json.dumps({"identity": "alice", "action": "remove", "result": "removed"})
    assert pages.answer({"main": idx}, f"removed main {fn} {removal}", audit) == "error the file is still there\n"
    os.unlink(pk / fn)
    idx.refresh_file(fn)  # inotify told of it first: the line still has the hash of what went
    assert pages.answer({"main": idx}, f"removed main {fn} {removal}", audit) == "ok\n"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["action"], line.get("file"), line["identity"]) for line in lines] == [
        ("upload", fn, "token:ci"), ("upload", "audited-2.0.tar.gz", "bob"), ("remove", fn, "alice")]
    assert lines[2]["sha256"] == stored["sha256"]
    assert pages.answer({"main": idx}, "audit main {not json", audit) == "error unreadable audit fields\n"

    # logrotate moved the file: the next line starts the new one.
    log.rename(tmp_path / "audit.log.1")
    assert pages.answer({"main": idx}, f"audit main {refused}", audit) == "ok\n"
    assert len(log.read_text().splitlines()) == 1
    # A log that cannot be written: no ok.
    log.unlink(); log.mkdir()
    assert pages.answer({"main": idx}, f"audit main {refused}", pages.Audit(str(log))).startswith(
        "error the audit log cannot be written")


def test_query_reads_every_rotated_file_oldest_first_and_follows_no_link(tmp_path, capsys):
    log = tmp_path / "audit.log"
    line = lambda t, who, fn: json.dumps({"time": t, "identity": who, "file": fn}) + "\n"  # noqa: E731
    with gzip.open(tmp_path / "audit.log.2.gz", "wt") as handle:
        handle.write(line("2026-01-01T00:00:00Z", "alice", "a-1.0.tar.gz"))
    (tmp_path / "audit.log.1").write_text(line("2026-02-01T00:00:00Z", "token:ci", "a-2.0.tar.gz") + "not json\n")
    log.write_text(line("2026-03-01T00:00:00Z", "alice", "b-1.0.tar.gz"))
    nginx = tmp_path / "nginx-audit.log"
    nginx.write_text(line("2026-02-15T00:00:00Z", "token:ci", ""))
    secret = tmp_path / "secret"
    secret.write_text(line("2026-01-02T00:00:00Z", "alice", "secret-1.0.tar.gz"))
    (tmp_path / "audit.log.3").symlink_to(secret)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"audit_log": str(log), "audit_other_logs": [str(nginx)]}))

    assert pages.query(str(config), ["identity=alice"]) == 0
    assert [json.loads(x)["file"] for x in capsys.readouterr().out.splitlines()] == ["a-1.0.tar.gz", "b-1.0.tar.gz"]
    assert pages.query(str(config), ["identity=token:ci", "file=a-*"]) == 0
    assert [json.loads(x)["time"] for x in capsys.readouterr().out.splitlines()] == ["2026-02-01T00:00:00Z"]
    assert pages.query(str(config), ["identity=token:ci"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert pages.query(str(config), ["alice"]) == 2


def test_a_group_serves_a_name_from_its_members_and_only_otherwise_from_the_mirror(tmp_path):
    """customer-a and customer-b both hold shared; customer-a holds confused, which the mirror
    has too (upstream's higher version); only the mirror has public. The group's pages: one per
    set of members that hold a name, the mirror's only for a name no member holds, each file
    at its own index's URL; nothing before every index is known."""
    dirs = {name: (tmp_path / "packages" / name, tmp_path / "pages" / name) for name in ("a", "b", "mirror")}
    for packages, _ in dirs.values():
        packages.mkdir(parents=True)
    wheel(dirs["a"][0], "shared", "1.0")
    wheel(dirs["b"][0], "shared", "2.0")
    wheel(dirs["a"][0], "confused", "1.0")
    wheel(dirs["mirror"][0], "Confused", "99.0")
    wheel(dirs["mirror"][0], "public", "3.0")
    indexes = {name: pages.Index({"name": name, "packages_dir": str(pk), "pages_dir": str(pg),
                                  "path": f"/{name}/"}) for name, (pk, pg) in dirs.items()}
    # The group registers with its members: their rebuilds below write its pages.
    pages.Group({"name": "all", "pages_dir": str(tmp_path / "pages" / "all"), "members": ["a", "b"],
                 "mirror": "mirror", "listed": []}, indexes)
    simple = tmp_path / "pages" / "all" / "simple"
    indexes["a"].rebuild()
    indexes["mirror"].rebuild()
    assert not simple.exists(), "no group page before every index is known"
    indexes["b"].rebuild()

    def urls(key, project):
        return sorted(f["url"] for f in json.loads((simple / project / key / "index.json").read_text())["files"])

    assert sorted(p.name for p in (simple / "shared").iterdir()) == ["a", "a+b", "b", "holders", "owners"]
    # What nginx reads in one readlink; owners is the same for configurations of earlier releases.
    assert os.readlink(simple / "shared" / "holders") == "=a+b"
    assert (simple / "shared" / "owners").read_text() == "a\nb\n"
    assert urls("a+b", "shared") == ["/a/packages/shared-1.0-py3-none-any.whl", "/b/packages/shared-2.0-py3-none-any.whl"]
    assert urls("b", "shared") == ["/b/packages/shared-2.0-py3-none-any.whl"]
    # The mirror's confused 99.0 is nowhere: the name is customer-a's.
    assert sorted(p.name for p in (simple / "confused").iterdir()) == ["a", "holders", "owners"]
    assert os.readlink(simple / "confused" / "holders") == "=a"
    assert urls("a", "confused") == ["/a/packages/confused-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in (simple / "public").iterdir()) == ["holders", "mirror"]
    assert os.readlink(simple / "public" / "holders") == "="
    assert urls("mirror", "public") == ["/mirror/packages/public-3.0-py3-none-any.whl"]
    # The root lists the mirror's names, confused too: leaving it out would tell anyone that the
    # name is private here. Its page is customer-a's, behind customer-a's access check.
    root = json.loads((simple / "index.json").read_text())
    assert [p["name"] for p in root["projects"]] == ["confused", "public"]

    # A name the mirror had first becomes private: from then on only the member's page.
    fn, _ = wheel(dirs["b"][0], "public", "0.1")
    indexes["b"].refresh_file(fn)
    assert sorted(p.name for p in (simple / "public").iterdir()) == ["b", "holders", "owners"]
    assert os.readlink(simple / "public" / "holders") == "=b"
    # And the mirror's new file of a private name changes nothing served.
    fn, _ = wheel(dirs["mirror"][0], "shared", "9.0")
    indexes["mirror"].refresh_file(fn)
    assert urls("a+b", "shared") == ["/a/packages/shared-1.0-py3-none-any.whl", "/b/packages/shared-2.0-py3-none-any.whl"]
    assert not (simple / "shared" / "mirror").exists()
