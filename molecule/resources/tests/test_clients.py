"""Real clients over the wire: twine uploads, pip and uv install, the index refuses what it must."""
import shlex

from conftest import INDEX, http_status, twine_status, twine_upload

testinfra_hosts = ["ansible://pypi_servers"]


def uploader(test_vars, credentials):
    name = test_vars["cheeseshop_test_user"]
    return name, credentials[name]


def test_twine_upload_then_pip_install(host, test_vars, credentials, wheel):
    upload = twine_upload(host, test_vars, wheel["path"], *uploader(test_vars, credentials))
    assert upload.rc == 0, upload.stdout + upload.stderr

    venv = f"/var/tmp/pip-{wheel['version']}"
    host.check_output(f"python3 -m venv {venv}")
    host.check_output(
        f"{venv}/bin/pip install --no-cache-dir --index-url {INDEX}/simple/ "
        f"{wheel['name']}=={wheel['version']}"
    )
    got = host.check_output(f"{venv}/bin/python -c 'import {wheel['module']} as m; print(m.VERSION)'")
    assert got == wheel["version"]


def test_uv_installs_by_unnormalised_name(host, test_vars, credentials, wheel):
    assert twine_upload(host, test_vars, wheel["path"], *uploader(test_vars, credentials)).rc == 0
    venv = f"/var/tmp/uv-{wheel['version']}"
    uv = f"{test_vars['cheeseshop_test_client_venv']}/bin/uv"
    host.check_output(f"{uv} venv --python /usr/bin/python3 {venv}")
    # Cheeseshop_Probe is not the normalised name: the index must still find it.
    host.check_output(
        f"VIRTUAL_ENV={venv} {uv} pip install --no-cache --index-url {INDEX}/simple/ "
        f"{shlex.quote('Cheeseshop_Probe==' + wheel['version'])}"
    )
    got = host.check_output(f"{venv}/bin/python -c 'import {wheel['module']} as m; print(m.VERSION)'")
    assert got == wheel["version"]


def test_upload_with_wrong_password_is_refused(host, test_vars, wheel):
    upload = twine_upload(host, test_vars, wheel["path"], test_vars["cheeseshop_test_user"], "wrong-password")
    # pypiserver's answer to a known user with a wrong password.
    assert upload.rc != 0 and twine_status(upload) == 403, upload.stdout + upload.stderr
    assert not host.file(f"/srv/pypi/packages/{wheel['path'].rsplit('/', 1)[1]}").exists


def test_reupload_is_refused_without_overwrite(host, test_vars, credentials, wheel):
    assert twine_upload(host, test_vars, wheel["path"], *uploader(test_vars, credentials)).rc == 0
    stored = host.file(f"/srv/pypi/packages/{wheel['path'].rsplit('/', 1)[1]}")
    original = stored.sha256sum
    # Same file name, other content: the stored file must stay as it was.
    other = host.check_output(
        f"/usr/local/bin/make_wheel.py {wheel['name']} {wheel['version']} /var/tmp/other-{wheel['version']} changed"
    )
    again = twine_upload(host, test_vars, other, *uploader(test_vars, credentials))
    assert again.rc != 0
    # pypiserver answers 409, or 400 to twine, which expects what pypi.org sends.
    assert twine_status(again) == 400, again.stdout + again.stderr
    assert stored.sha256sum == original


def test_unknown_project_is_not_redirected_to_pypi(host):
    # With a fallback the index would answer 303 to pypi.org: dependency confusion.
    assert http_status(host, "/simple/requests/") == 404


def test_anonymous_reads_are_allowed_by_default(host):
    assert http_status(host, "/simple/") == 200
