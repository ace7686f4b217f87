"""Unit tests of the cluster check: exactly one writer among the hosts that share a volume."""
import pytest

from ansible_collections.cheeseshop.pypi.plugins.filter.cluster import cluster_problems


def check(inventory, host):
    return cluster_problems(sorted(inventory), inventory, host)


def test_a_host_alone_is_its_own_writer():
    assert check({"a": {}, "b": {}}, "a") == []
    assert check({"a": {"pypi_writer": "yes"}}, "a") == []


def test_one_writer_and_its_readers_pass_on_every_host():
    inventory = {"w": {"pypi_cluster": "eu"}, "r1": {"pypi_cluster": "eu", "pypi_writer": False},
                 "r2": {"pypi_cluster": "eu", "pypi_writer": "false"}, "alone": {}}
    assert [check(inventory, host) for host in inventory] == [[], [], [], []]


@pytest.mark.parametrize("host", ["w1", "w2", "r"])
def test_two_writers_are_refused_on_every_host_of_the_cluster(host):
    inventory = {"w1": {"pypi_cluster": "eu"}, "w2": {"pypi_cluster": "eu", "pypi_writer": True},
                 "r": {"pypi_cluster": "eu", "pypi_writer": False}, "other": {"pypi_cluster": "us"}}
    problems = check(inventory, host)
    assert problems == ["pypi_cluster eu has 2 writers (w1, w2): uploads must reach one host, since two "
                        "could both store the same file; set pypi_writer: false on all but one."]
    assert check(inventory, "other") == []


def test_a_cluster_with_no_writer_names_its_hosts():
    inventory = {"r1": {"pypi_cluster": "eu", "pypi_writer": False}, "r2": {"pypi_cluster": "eu", "pypi_writer": False}}
    assert "has no writer: set pypi_writer: true on exactly one of r1, r2" in check(inventory, "r2")[0]


def test_a_host_outside_the_group_still_sees_its_cluster():
    """A run whose host is not (yet) in the list given still counts itself."""
    inventory = {"w": {"pypi_cluster": "eu"}, "new": {"pypi_cluster": "eu"}}
    assert "2 writers (new, w)" in cluster_problems(["w"], inventory, "new")[0]


@pytest.mark.parametrize("facts,message", [
    ({"pypi_writer": False}, "pypi_writer is false on a host that names no pypi_cluster"),
    ({"pypi_writer": "maybe"}, "pypi_writer must be true or false, got 'maybe'."),
    ({"pypi_cluster": "eu/1"}, "pypi_cluster 'eu/1' is not a valid name"),
    ({"pypi_cluster": 3}, "pypi_cluster 3 is not a valid name"),
])
def test_bad_values_are_named(facts, message):
    assert check({"h": facts}, "h")[0].startswith(message)
