"""Several indexes behind one nginx, from the client container: who may list, download and
upload where, with real pip, uv and twine over HTTPS (molecule/indexes's inventory).

public (/public/) is read by anyone and written by release-bot; customer-a
(/private/customer-a/) is read by customer-a-dev and customer-a-ci and written by
customer-a-dev; customer-b (/private/customer-b/) belongs to customer-b-dev.
"""
import base64
import json
import os
import shlex
import time
from urllib.parse import urljoin, urlsplit

import pytest

from conftest import (body, burst, client_wheel, first_file_url, headers, https_upload, restart_nginx, status,
                      twine_status, until_page, version)

testinfra_hosts = ["ansible://clients"]

PATHS = {"public": "/public/", "customer-a": "/private/customer-a/", "customer-b": "/private/customer-b/"}
UPLOADER = {"public": "release-bot", "customer-a": "customer-a-dev", "customer-b": "customer-b-dev"}


@pytest.fixture(scope="module")
def published(host, test_vars, server, ca, user):
    """One fresh package in each index, uploaded by its uploader with twine over HTTPS."""
    projects = {}
    for index, path in PATHS.items():
        project, ver = f"cheeseshop-{index}", version()
        run = https_upload(host, test_vars, server, ca, client_wheel(host, project, ver), user(UPLOADER[index]), path)
        assert run.rc == 0, run.stdout + run.stderr
        projects[index] = (project, ver)
    return projects


def page(server, index, project=""):
    return f"https://{server}{PATHS[index]}simple/{project + '/' if project else ''}"


def test_anonymous_reads_public_and_nothing_else(host, curl, server, published):
    project, _ = published["public"]
    assert status(host, curl, page(server, "public", project)) == 200
    assert status(host, curl, first_file_url(host, curl, page(server, "public", project))) == 200
    for index in ("customer-a", "customer-b"):
        assert status(host, curl, page(server, index)) == 401
        assert status(host, curl, page(server, index, published[index][0])) == 401
        file_path = f"https://{server}{PATHS[index]}packages/{published[index][0].replace('-', '_')}-{published[index][1]}-py3-none-any.whl"
        assert status(host, curl, file_path) == 401
    # Outside the indexes' paths there is nothing, and the answer names no index.
    for path in ("/", "/simple/", "/private/", "/packages/"):
        assert status(host, curl, f"https://{server}{path}") == 404


def test_pages_tell_strangers_nothing_of_their_readers(host, curl, server, user, published):
    """Security review #27, finding 8: X-Cache-Status told anonymous clients whether someone had
    read a page in the last seconds. Pages come from disk now: no such header, for anyone, and
    a public page may be kept by shared caches while a private one may not."""
    url = page(server, "public", published["public"][0])
    for _ in range(2):
        head = headers(host, curl, url)
        assert head.startswith("http/2 200") and "x-cache-status" not in head, head
        assert "cache-control: public, no-cache" in head
    private = page(server, "customer-a", published["customer-a"][0])
    head = headers(host, curl, private, user("customer-a-dev"))
    assert head.startswith("http/2 200") and "x-cache-status" not in head, head
    assert "cache-control: private, no-cache" in head


def test_an_index_bare_path_answers_as_an_unknown_one(host, curl, server):
    """Security review #27, finding 8: /private/customer-a (no slash) answered 301 where an
    unknown /private/customer-z answered 404, so index names could be guessed."""
    for path in ("/private/customer-a", "/private/customer-z", "/public"):
        head = headers(host, curl, f"https://{server}{path}")
        assert head.startswith("http/2 404") and "location:" not in head, (path, head)
    # Nor do the index's own path and its simple API without the slash answer a stranger before
    # the access check (a 405 or a 301 there told that the index exists).
    for path, extra in (("/private/customer-a/", " -X PUT"), ("/private/customer-a/simple", "")):
        head = headers(host, curl, f"https://{server}{path}", None, extra)
        assert head.startswith("http/2 401") and "location:" not in head, (path, head)


def test_customer_cannot_list_download_or_upload_in_another_customers_index(
        host, test_vars, curl, server, ca, user, published):
    alice = user("customer-a-dev")
    project_b, version_b = published["customer-b"]
    file_b = first_file_url(host, curl, page(server, "customer-b", project_b), user("customer-b-dev"))
    assert status(host, curl, page(server, "customer-a", published["customer-a"][0]), alice) == 200
    # #41: valid credentials without the right get 403, not 401: uv stops searching its indexes
    # there and pip asks no keyring for another password. Nothing is counted against the name,
    # however often (a CI job that keeps trying is not an attacker)...
    assert [status(host, curl, page(server, "customer-b"), alice) for _ in range(25)] == [403] * 25
    assert status(host, curl, page(server, "customer-b", project_b), alice) == 403
    assert status(host, curl, file_b, alice) == 403
    run = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-intruder", version()), alice,
                       PATHS["customer-b"])
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr
    assert "cheeseshop-intruder" not in body(host, curl, page(server, "customer-b"), user("customer-b-dev"))
    # ... and a wrong password of that user is a 401 as anywhere: a 403 tells only someone who
    # holds the password that the user exists.
    assert status(host, curl, page(server, "customer-b"), ("customer-a-dev", "not-the-password")) == 401
    assert status(host, curl, page(server, "customer-a"), alice) == 200


def test_reader_cannot_upload_and_publisher_only_writes_its_index(host, test_vars, server, ca, user):
    run = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-ci-upload", version()),
                       user("customer-a-ci"), PATHS["customer-a"])
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr
    run = https_upload(host, test_vars, server, ca, client_wheel(host, "cheeseshop-bot-upload", version()),
                       user("release-bot"), PATHS["customer-a"])
    assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr
    anonymous = host.run(
        f"{test_vars['cheeseshop_test_client_venv']}/bin/twine upload --non-interactive --disable-progress-bar "
        f"--cert {test_vars['cheeseshop_client_ca']} --repository-url https://{server}/public/ "
        f"-u '' -p '' {shlex.quote(client_wheel(host, 'cheeseshop-anonymous-upload', version()))}")
    # The public index lets anyone read; pypiserver asks an anonymous uploader to log in.
    assert anonymous.rc != 0 and twine_status(anonymous) == 401, anonymous.stdout + anonymous.stderr


def test_an_upload_appears_in_its_own_index_only(host, curl, server, user, published):
    readers = {"public": None, "customer-a": user("customer-a-dev"), "customer-b": user("customer-b-dev")}
    for index, (project, ver) in published.items():
        for other, reader in readers.items():
            listing = body(host, curl, page(server, other), reader)
            assert (f'"{project}/"' in listing) == (other == index), (index, other, listing)
            # The file is not reachable under another index's path either.
            name = f"{project.replace('-', '_')}-{ver}-py3-none-any.whl"
            assert status(host, curl, f"https://{server}{PATHS[other]}packages/{name}", reader) == (
                200 if other == index else 404)


def test_redirect_for_unnormalised_name_keeps_the_index_path(host, curl, server, user, published):
    """pypiserver drops the path prefix from this redirect (pypiserver issue 703); nginx puts it back."""
    alice = user("customer-a-dev")
    project, _ = published["customer-a"]
    unnormalised = project.replace("-", "_").title()  # Cheeseshop_Customer_A
    for index, reader in (("customer-a", alice), ("public", None)):
        name = published[index][0].replace("-", "_").title()
        head = headers(host, curl, page(server, index, name), reader)
        assert head.startswith("http/2 301"), head
        # Relative: a redirect names no host, so no Host header a client sends comes back (#27).
        assert f"location: {PATHS[index]}simple/{published[index][0]}/\r" in head, head
    followed = host.check_output(f"{curl} -L -w '\n%{{url_effective}}' -u {shlex.quote(alice[0] + ':' + alice[1])} "
                                 f"{shlex.quote(page(server, 'customer-a', unnormalised))}")
    text, landed = followed.rsplit("\n", 1)
    # The page's links are relative to where the redirect landed: the index's own files.
    href = text.split('href="', 1)[1].split('"', 1)[0]
    # (curl names the user in the URL it landed on: only the path is compared.)
    assert urlsplit(landed).path == f"/private/customer-a/simple/{project}/", landed
    assert urlsplit(urljoin(landed, href)).path.startswith(
        f"/private/customer-a/packages/{project.replace('-', '_')}-"), href


def test_pip_and_uv_install_from_each_index_they_may_read(host, test_vars, server, ca, user, published):
    venv = "/var/tmp/indexes-client"
    host.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    project, ver = published["public"]
    host.check_output(f"{venv}/bin/pip install --no-cache-dir --cert {ca} "
                      f"--index-url https://{server}/public/simple/ {shlex.quote(project + '==' + ver)}")
    name, password = user("customer-a-dev")
    project, ver = published["customer-a"]
    index = f"https://{name}:{password}@{server}/private/customer-a/simple/"
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    host.check_output(f"SSL_CERT_FILE={ca} {uv} pip install --no-cache --python {venv}/bin/python "
                      f"--index-url {shlex.quote(index)} {shlex.quote(project + '==' + ver)}")
    installed = host.check_output(f"{venv}/bin/pip list --format=freeze")
    assert f"cheeseshop-public=={published['public'][1]}" in installed
    assert f"cheeseshop-customer-a=={ver}" in installed
    # Customer a's credentials do not open customer b's index to pip.
    project, ver = published["customer-b"]
    denied = host.run(f"{venv}/bin/pip install -vv --no-cache-dir --cert {ca} "
                      f"--index-url https://{name}:{password}@{server}/private/customer-b/simple/ "
                      f"{shlex.quote(project + '==' + ver)}")
    # A 403 (#41): pip skips the page (its line at -vv, pip/_internal/index/collector.py) and does
    # not take the password for a wrong one, as it does at a 401 (pip/_internal/network/auth.py).
    assert denied.rc != 0 and "403 Client Error: Forbidden" in denied.stdout, denied.stdout + denied.stderr
    assert "401 Error" not in denied.stderr, denied.stderr
    # uv stops at the 403 and says why (its hint names the status).
    denied = host.run(f"SSL_CERT_FILE={ca} {uv} pip install --no-cache --python {venv}/bin/python "
                      f"--index-url https://{name}:{password}@{server}/private/customer-b/simple/ "
                      f"{shlex.quote(project + '==' + ver)}")
    assert denied.rc != 0 and "403 Forbidden" in denied.stderr, denied.stdout + denied.stderr


def test_a_page_read_by_one_customer_is_never_served_to_another(host, curl, server, user, published):
    alice, bob = user("customer-a-dev"), user("customer-b-dev")
    url = page(server, "customer-a", published["customer-a"][0])
    assert status(host, curl, url, alice) == 200
    assert status(host, curl, url, bob) == 403
    assert status(host, curl, url) == 401


def test_client_addresses_behind_a_trusted_balancer_are_counted_apart(host, curl, server):
    """#27: behind a load balancer every client arrived as the balancer's address, so the
    failure counts (and the log) lumped them together. From the addresses in
    nginx_proxy_trusted_proxies (this client, here) X-Forwarded-For gives the client: one
    client's wrong passwords bar a name for that client only, and the log names it."""
    page = f"https://{server}/private/customer-a/simple/"
    name = f"xff-probe-{version()}"
    flooder, neighbour = " -H 'X-Forwarded-For: 203.0.113.1'", " -H 'X-Forwarded-For: 10.9.8.7, 203.0.113.2'"
    codes = [status(host, curl, page, (name, f"guess-{n}"), flooder) for n in range(21)]
    assert codes == [401] * 20 + [429], codes
    assert status(host, curl, page, (name, "guess-x"), neighbour) == 401
    assert status(host, curl, page, (name, "guess-y"), flooder) == 429
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    time.sleep(1.5)  # the access log is written at least every second
    log = server_host.check_output(f"grep -F -- {shlex.quote(name)} /var/log/nginx/pypi-access.log | cut -d' ' -f1 | sort | uniq -c")
    assert sorted(line.split()[1] for line in log.splitlines()) == ["203.0.113.1", "203.0.113.2"], log


def xff(address):
    return f" -H 'X-Forwarded-For: {address}'"


def test_wrong_upload_passwords_on_an_anonymous_index_are_limited(host, curl, server):
    """Second review, finding 4: on an anonymous-read index nginx let uploads through unchecked,
    and pypiserver checked the password with no counting: 120 wrong passwords, 120 answers.
    Every POST is checked by nginx now: 20 guesses, then 429 without a hash check."""
    form = "-F ':action=file_upload' -F protocol_version=1 -F name=x -F version=1.0 -F content=@/etc/hostname"
    codes = [status(host, curl, f"https://{server}/public/", ("release-bot", f"guess-{n}"),
                    f" {form}{xff('203.0.113.40')}") for n in range(25)]
    assert codes == [401] * 20 + [429] * 5, codes


def test_concurrent_guesses_run_no_more_checks_than_the_limits(host, curl, server, user):
    """Second review, finding 3: the limits were read before a check waited its turn. 150
    concurrent wrong passwords for one name gave 124 checks, 120 identical ones 120 answers of
    401 in 0.3 s, and with the valid credential not yet remembered (here: after a restart) a
    burst locked its user out from every address. Now a failure is taken before the check:
    20 checks an address, 100 a name, and an address that never failed still gets its check."""
    page = f"https://{server}/private/customer-b/simple/"
    name = "customer-b-dev"
    restart_nginx(host, server)
    try:
        distinct = burst(host, curl, page, [(name, f"guess-{n}") for n in range(150)], xff("203.0.113.60"))
        assert distinct == {401: 20, 429: 130}, distinct
        same = burst(host, curl, page, [(name, "one-guess")] * 120, xff("203.0.113.61"))
        assert same == {401: 20, 429: 100}, same
        for n, address in enumerate(("203.0.113.62", "203.0.113.63", "203.0.113.64")):
            got = burst(host, curl, page, [(name, f"more-{n}-{m}") for m in range(30)], xff(address))
            assert got == {401: 20, 429: 10}, (address, got)
        # 100 failures for the name: an address that failed is barred, its user's valid password too...
        assert status(host, curl, page, user(name), xff("203.0.113.64")) == 429
        # ...but the valid user at another address is let through (one check a second there),
        # and a guess from yet another address right after it, in that second, is not.
        valid, guess = (shlex.quote(f"{n}:{p}") for n, p in (user(name), (name, "fresh-address")))
        codes = host.check_output(
            f"{curl} -u {valid}{xff('198.51.100.7')} -o /dev/null -w '%{{http_code}} ' {page}; "
            f"{curl} -u {guess}{xff('198.51.100.8')} -o /dev/null -w '%{{http_code}}' {page}")
        assert codes.split() == ["200", "429"], codes
    finally:
        restart_nginx(host, server)


def test_a_flood_of_new_names_and_addresses_never_wipes_out_counted_failures(host, curl, server, user):
    """Second review, 7a: every refused request adds counters to nginx's shared memory, and the
    remembered credentials lived in the same dictionary. A flood from ever new addresses (cheap:
    behind a balancer, or with IPv6) filled it, and nginx evicted the oldest entries: the
    failures counted against a name, so an address barred after 20 guesses could guess again,
    and the remembered credentials. The counters are kept apart now and never evicted; while
    their memory is full, new checks are refused, and known credentials pass. The scenario's
    counter memory is small (host_vars), so that the flood fills it here."""
    page = f"https://{server}/private/customer-a/simple/"
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    flood_name = "f" * 250  # the longest keys a name gives
    restart_nginx(host, server)
    try:
        assert status(host, curl, page, user("customer-a-ci"), xff("198.51.100.20")) == 200
        # An address that has used up its guesses for a name.
        guesser = xff("203.0.113.80")
        codes = [status(host, curl, page, ("customer-a-dev", f"guess-{n}"), guesser) for n in range(21)]
        assert codes == [401] * 20 + [429], codes
        # The flood's name over its total, then one request from each new address: a 429 each,
        # with no password check, and two new counters each.
        for n in range(5):
            burst(host, curl, page, [(flood_name, f"over-{n}-{m}") for m in range(20)], xff(f"203.0.113.{90 + n}"))
        logged = int(server_host.check_output("wc -l < /var/log/nginx/error.log"))
        credential = base64.b64encode(f"{flood_name}:flood".encode()).decode()
        for batch in range(30):
            addresses = "\n".join(f"2001:db8:{batch:x}::{n:x}" for n in range(200))
            codes = host.check_output(
                f"printf '%s\\n' {shlex.quote(addresses)} | xargs -P 100 -I@ {curl} -o /dev/null -w '%{{http_code}}\\n' "
                f"-H 'X-Forwarded-For: @' -H 'Authorization: Basic {credential}' {shlex.quote(page)}").split()
            # A 401 now and then: the slow lane's one check a second for addresses new to the name.
            assert set(codes) <= {"401", "429"}, codes
            if server_host.run(f"tail -n +{logged + 1} /var/log/nginx/error.log"
                               " | grep -qF \"the failure counters' memory is full\"").rc == 0:
                break
        else:
            pytest.fail("6,000 requests from new addresses did not fill the counters' memory")
        # The barred address is still barred: its failures were not pushed out.
        assert status(host, curl, page, ("customer-a-dev", "guess-after-flood"), guesser) == 429
        # A known credential passes from anywhere while the memory is full.
        assert status(host, curl, page, user("customer-a-ci"), xff("198.51.100.21")) == 200
    finally:
        restart_nginx(host, server)


def test_project_status_is_served_and_archived_or_quarantined_projects_take_no_upload(
        host, test_vars, server, ca, curl, user):
    """PEP 792 from host_vars: files of cheeseshop-archived and cheeseshop-quarantined put into
    public's packages by hand (as a restore would). The archived one is listed and installs,
    with its status; the quarantined one lists no file and serves none. Neither takes an upload."""
    server_host = host.get_host(f"ansible://{server}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
    files = {}
    try:
        project_status_checks(host, server_host, test_vars, server, ca, curl, user, files)
    finally:
        # Taken out again: test_restore_new_host.py compares what a restored host lists with
        # the files on disk, and a quarantined file is on disk but listed nowhere.
        for name in files.values():
            server_host.run(f"rm -f /srv/pypi/indexes/public/{name}")
        until_page(host, curl, page(server, "public"), None, '"cheeseshop-archived/"', listed=False)


def project_status_checks(host, server_host, test_vars, server, ca, curl, user, files):
    for project in ("cheeseshop-archived", "cheeseshop-quarantined"):
        built = server_host.check_output(f"/usr/local/bin/make_wheel.py {project} 1.0.0 /var/tmp/status-{project}")
        files[project] = os.path.basename(built)
        # The packages directory's group, as an upload's file gets it (setgid directory).
        server_host.check_output(f"install -m 0644 -o pypiserver -g \"$(stat -c %G /srv/pypi/indexes/public)\" "
                                 f"{built} /srv/pypi/indexes/public/")
    accept = "-H 'Accept: application/vnd.pypi.simple.v1+json'"
    until_page(host, curl, page(server, "public", "cheeseshop-archived"), None, files["cheeseshop-archived"])
    archived = json.loads(body(host, f"{curl} {accept}", page(server, "public", "cheeseshop-archived")))
    assert archived["meta"]["api-version"] == "1.4"
    assert archived["project-status"] == {"status": "archived", "reason": "moved to cheeseshop-public"}
    assert '<meta name="pypi:project-status" content="archived">' in body(
        host, curl, page(server, "public", "cheeseshop-archived"))
    venv = "/var/tmp/status-client"
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    host.check_output(f"rm -rf {venv} && python3 -m venv {venv}")
    host.check_output(f"SSL_CERT_FILE={ca} {uv} pip install --no-cache --python {venv}/bin/python "
                      f"--index-url https://{server}/public/simple/ cheeseshop-archived==1.0.0")

    until_page(host, curl, page(server, "public", "cheeseshop-quarantined"), None,
               '<meta name="pypi:project-status" content="quarantined">')
    quarantined = json.loads(body(host, f"{curl} {accept}", page(server, "public", "cheeseshop-quarantined")))
    assert quarantined["project-status"] == {"status": "quarantined"} and quarantined["files"] == [], quarantined
    assert status(host, curl, f"https://{server}/public/packages/{files['cheeseshop-quarantined']}") == 404
    assert status(host, curl, f"https://{server}/public/packages/{files['cheeseshop-archived']}") == 200
    denied = host.run(f"{venv}/bin/pip install --no-cache-dir --cert {ca} --index-url https://{server}/public/simple/ "
                      "cheeseshop-quarantined")
    assert denied.rc != 0, denied.stdout

    for project in ("cheeseshop-archived", "Cheeseshop.Quarantined"):
        run = https_upload(host, test_vars, server, ca, client_wheel(host, project, version()), user("release-bot"),
                           PATHS["public"])
        assert run.rc != 0 and twine_status(run) == 403, run.stdout + run.stderr

    # A private index's quarantined name (customer-a's, host_vars) is not told to a stranger: the
    # 401 any file gets, and the 404 only after the access check.
    hidden = f"https://{server}{PATHS['customer-a']}packages/cheeseshop_hidden_quarantine-1.0.tar.gz"
    assert status(host, curl, hidden) == 401
    assert status(host, curl, hidden, user("customer-a-dev")) == 404
