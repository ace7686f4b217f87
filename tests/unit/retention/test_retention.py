"""Unit tests of cheeseshop-retention (roles/retention/files): which builds go under a policy, and
that a real run unlinks them and asks the page service for each one's audit line."""
import json
import os
import time

import pytest

from conftest import load_program

retention = load_program("retention", "cheeseshop-retention")

DAY = 86400


def put(directory, filename, age_days=30):
    path = directory / filename
    path.write_bytes(b"x")
    moment = time.time() - age_days * DAY
    os.utime(path, (moment, moment))
    return filename


@pytest.fixture
def index(tmp_path):
    """30 dev builds and 3 releases of widgets (a wheel and an sdist each), old enough."""
    packages = tmp_path / "packages"
    packages.mkdir()
    for n in range(1, 31):
        put(packages, f"widgets-2.0.dev{n}-py3-none-any.whl")
    for version in ("1.0", "1.1", "1.2"):
        put(packages, f"widgets-{version}-py3-none-any.whl")
        put(packages, f"widgets-{version}.tar.gz")
    return packages


def going(packages, policy):
    """(project, version as written) of what goes."""
    projects = retention.releases_of(packages)
    return [(p, str(projects[p][k]["version"])) for p, k, _ in retention.doomed(projects, policy)]


def test_the_newest_pre_releases_and_every_release_stay(index):
    gone = going(index, {"keep_prereleases": 5})
    assert gone == [("widgets", f"2.0.dev{n}") for n in range(1, 26)]


def test_pins_young_builds_and_a_project_s_only_version_stay(index):
    put(index, "widgets-2.1rc1-py3-none-any.whl", age_days=1)
    put(index, "gadget-0.1.dev1.tar.gz")
    put(index, "gadget-0.1.dev2.tar.gz")
    gone = going(index, {"keep_prereleases": 0, "min_age_days": 7, "keep": ["Widgets==2.0.dev3"]})
    assert ("widgets", "2.1rc1") not in gone and ("widgets", "2.0.dev3") not in gone
    assert ("widgets", "2.0.dev30") in gone and len([k for p, k in gone if p == "widgets"]) == 29
    # gadget has no release: its newest version stays even with keep_prereleases 0.
    assert [k for p, k in gone if p == "gadget"] == ["0.1.dev1"]


def test_check_lists_and_a_real_run_removes_with_an_audit_line_each(index, pages_socket, capsys):
    path, lines = pages_socket
    args = ["--index", "main", "--pages-socket", path, "--policy", json.dumps({"keep_prereleases": 5})]

    assert retention.main(args + ["--check", str(index)]) == 0
    listed = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert listed == [f"widgets-2.0.dev{n}-py3-none-any.whl" for n in range(1, 26)]
    assert len(os.listdir(index)) == 36 and lines == []

    assert retention.main(args + [str(index)]) == 0
    assert sorted(os.listdir(index)) == sorted(
        [f"widgets-2.0.dev{n}-py3-none-any.whl" for n in range(26, 31)]
        + [f"widgets-{v}{s}" for v in ("1.0", "1.1", "1.2") for s in ("-py3-none-any.whl", ".tar.gz")])
    assert len(lines) == 25 and all(line.startswith("removed main widgets-2.0.dev") for line in lines)
    assert json.loads(lines[0].split(" ", 3)[3])["identity"] == "retention"
    capsys.readouterr()
    # A second run removes nothing.
    assert retention.main(args + [str(index)]) == 0
    assert capsys.readouterr().out == "" and len(lines) == 25
