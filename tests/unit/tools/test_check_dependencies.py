"""tools/check-dependencies: it must fail when shipped content calls an undeclared collection."""
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "check-dependencies"


def tree(tmp_path, dependencies, task):
    (tmp_path / "galaxy.yml").write_text(
        "namespace: cheeseshop\nname: pypi\nversion: 0.0.1\n"
        + ("dependencies:\n" + "".join(f"  {d}: '>=1.0.0'\n" for d in dependencies) if dependencies else "")
    )
    tasks = tmp_path / "roles" / "r" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(task)
    return tmp_path


def check(root):
    return subprocess.run([sys.executable, TOOL, "--root", root], capture_output=True, text=True)


def test_declared_and_used_passes(tmp_path):
    result = check(tree(tmp_path, ["community.crypto"], "- community.crypto.x509_certificate: {}\n"))
    assert result.returncode == 0, result.stderr


def test_undeclared_module_fails_and_names_the_place(tmp_path):
    result = check(tree(tmp_path, [], "- name: x\n  community.crypto.x509_certificate: {}\n"))
    assert result.returncode == 1
    assert "community.crypto is used (community.crypto.x509_certificate at roles/r/tasks/main.yml:2" in result.stderr


@pytest.mark.parametrize("use", [
    "- debug: {msg: \"{{ x | community.general.counter }}\"}\n",
    "- include_role: {name: community.general.some_role}\n",
])
def test_undeclared_filter_or_role_fails(tmp_path, use):
    result = check(tree(tmp_path, [], use))
    assert result.returncode == 1 and "community.general is used" in result.stderr


def test_declared_but_unused_fails(tmp_path):
    result = check(tree(tmp_path, ["ansible.posix"], "- ansible.builtin.debug: {msg: hi}\n"))
    assert result.returncode == 1
    assert "ansible.posix is declared in galaxy.yml but nothing shipped uses it" in result.stderr


def test_builtin_and_host_names_are_not_dependencies(tmp_path):
    result = check(tree(tmp_path, [], "- ansible.builtin.debug: {msg: pypi.example.com nginx.service.d}\n"))
    assert result.returncode == 0, result.stderr
