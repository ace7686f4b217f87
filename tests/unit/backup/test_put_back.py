"""The backup program's put-back (roles/backup/files/cheeseshop-backup), run as root on real
files: a service account that swaps the file being put back for a link gets nothing of root."""
import os
import shutil

import pytest

from conftest import load_program

backup = load_program("backup", "cheeseshop-backup")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the put-back sets owners: run as root")


def test_a_part_file_swapped_for_a_link_changes_nothing_it_points_to(tmp_path, monkeypatch):
    """Second review, finding 2: a process running as pypiserver swapped the put-back's .part
    file for a link to /etc/passwd, which then became pypiserver's. Here the swap happens in
    the middle of the copy, and the link's target keeps its owner and mode."""
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    target.chmod(0o644)
    source = tmp_path / "staging-file"
    source.write_text("restored\n")
    os.chown(source, 65534, 65534)
    source.chmod(0o640)
    packages = tmp_path / "packages"
    packages.mkdir()
    copy = shutil.copyfileobj

    def swapping_copy(src, dst, length=0):
        copy(src, dst, length)
        for entry in packages.iterdir():
            if entry.name.endswith(".part"):  # what the attacker's watcher does
                entry.unlink()
                entry.symlink_to(target)
    monkeypatch.setattr(backup.shutil, "copyfileobj", swapping_copy)
    with pytest.raises(RuntimeError, match="swapped"):
        backup._copy_into_place(str(source), str(packages / "foo-1.0.tar.gz"))
    stat = target.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o7777) == (0, 0, 0o644)
    assert target.read_text() == "root:x:0:0\n"
    assert not list(packages.iterdir())


def test_a_put_back_file_has_the_owner_mode_and_time_of_the_backup(tmp_path):
    source = tmp_path / "staging-file"
    source.write_text("restored\n")
    os.chown(source, 65534, 65534)
    source.chmod(0o640)
    os.utime(source, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    packages = tmp_path / "packages"
    packages.mkdir()
    backup._copy_into_place(str(source), str(packages / "foo-1.0.tar.gz"))
    placed = (packages / "foo-1.0.tar.gz").stat()
    assert (placed.st_uid, placed.st_gid, placed.st_mode & 0o7777) == (65534, 65534, 0o640)
    assert placed.st_mtime_ns == 1_600_000_000_000_000_000
    assert [p.name for p in packages.iterdir()] == ["foo-1.0.tar.gz"]
