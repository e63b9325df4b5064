"""The resize action as a zip for a real OpenWhisk (labkit.pipeline.action_zip), and that zip
deployed on the lab's runner and invoked by the pipeline.

The unit tests build small zips (no requirement, so no download); the stack test builds the real
one from the pinned requirements (from PyPI, once: it is cached), pushes images through the whole
pipeline with the source-deployed action and then with the zip deployed by the official ``openwhisk``
npm client (``tests/faas/conformance/deploy-action.js``, with what ``labkit.pipeline.deploy.action_deployment``
says labkit deploys), and compares the outputs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.pipeline import deploy as pipeline
from labkit.pipeline import upload
from labkit.pipeline.action_zip import REQUIREMENTS, SITE_PACKAGES, ZipBuild, build_action_zip, zip_layout
from labkit.pipeline.images import generate_pool
from labkit.pipeline.reconcile import output_key
from labkit.stack.lab import Lab
from tests.faas.test_conformance import SUITE, _install
from tests.support import output_bytes, read_output

DEPLOY_SCRIPT = SUITE / "deploy-action.js"
DEPLOY_TIMEOUT_S = 120
SOURCE = b"def main(args):\n    return {'ok': True}\n"
PACKAGE = "dit247-zip-test"


def tiny(source: bytes = SOURCE) -> ZipBuild:
    """A build with no requirement: the layout without a download."""
    return ZipBuild(source=source, requirements=b"# nothing\n")


def pins() -> dict[str, str]:
    """``name -> version`` of the ``==`` lines of the action's requirements file."""
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return {name.strip().lower(): version.strip() for name, _, version in
            (line.partition("==") for line in lines if "==" in line)}


def run_activated(root: Path, code: str) -> str:
    """Run ``code`` in a bare interpreter (``-I -S``: no site-packages of ours) after the zip's activate_this.py."""
    script = root / "virtualenv" / "bin" / "activate_this.py"
    prelude = f"exec(open({str(script)!r}).read(), {{'__file__': {str(script)!r}}})\n"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True,
                          timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------- the zip's layout


def test_the_zip_has_the_layout_openwhisks_launcher_reads(tmp_path: Path) -> None:
    data = build_action_zip(tmp_path, tiny()).read_bytes()
    layout = zip_layout(data)
    assert layout["entry"] == "__main__.py" and layout["activate_this"]
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        names = zipped.namelist()
        assert zipped.read("__main__.py") == SOURCE
        modes = {info.filename: info.external_attr >> 16 for info in zipped.infolist()}
    assert f"{SITE_PACKAGES}/" not in names  # files only; the folder comes with its contents
    assert "virtualenv/pyvenv.cfg" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("/") or ".." in n.split("/")]
    # The build's own traces are not in it: no interpreter links, no shell scripts naming its temp dir.
    assert not [n for n in names if n.startswith("virtualenv/bin/") and n != "virtualenv/bin/activate_this.py"]
    assert not [n for n, mode in modes.items() if mode & 0o170000 == 0o120000], "symlinks in the zip"


def test_activate_this_puts_the_zips_site_packages_first(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_action_zip(tmp_path / "cache", tiny())) as zipped:
        zipped.extractall(tmp_path / "action")
    site = tmp_path / "action" / SITE_PACKAGES
    site.mkdir(parents=True, exist_ok=True)  # with no requirement it is empty, so not in the zip
    (site / "only_in_the_zip.py").write_text("WHERE = __file__\n")
    printed = run_activated(tmp_path / "action", "import sys, os, only_in_the_zip\n"
                                                 "print(sys.path[0]); print(only_in_the_zip.WHERE); "
                                                 "print(os.environ['VIRTUAL_ENV'])")
    first, module, venv = printed.splitlines()
    assert Path(first) == site and Path(module).parent == site
    assert Path(venv) == tmp_path / "action" / "virtualenv"


def test_a_zip_is_built_once_and_equal_inputs_give_equal_bytes(tmp_path: Path) -> None:
    first = build_action_zip(tmp_path, tiny())
    stamp = first.stat().st_mtime_ns
    assert build_action_zip(tmp_path, tiny()) == first and first.stat().st_mtime_ns == stamp  # from the cache
    before = first.read_bytes()
    assert build_action_zip(tmp_path, tiny(), force=True).read_bytes() == before  # rebuilt: same bytes
    other = build_action_zip(tmp_path, tiny(SOURCE + b"# changed\n"))
    assert other != first and other.parent == tmp_path / "actions"  # another input, another cache entry


def test_a_pin_pip_cannot_install_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    bad = ZipBuild(source=SOURCE, requirements=b"Pillow==\n")  # no version: pip refuses it offline
    with pytest.raises(LabConfigError, match="requirements.txt"):
        build_action_zip(tmp_path, bad)
    assert not list((tmp_path / "actions").glob("*.zip"))  # nothing half-built is cached


def test_the_cli_refuses_an_out_path_it_cannot_write_in_one_line(tmp_path: Path) -> None:
    env = {"LABKIT_CACHE_DIR": str(tmp_path / "cache")}
    for out in (tmp_path, tmp_path / "no" / "such" / "resize.zip"):
        result = CliRunner().invoke(main, ["action", "zip", "--out", str(out)], env=env)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: cannot write the zip") and result.output.count("\n") == 1
    assert not (tmp_path / "cache").exists()  # refused before any build


# ---------------------------------------------------------------- the real zip through the pipeline


def _outputs(lab: Lab, rows) -> list[tuple[str, tuple[int, int], bytes]]:
    found = []
    for row in rows.itertuples():
        data = output_bytes(lab, row.key_out)
        with Image.open(io.BytesIO(data)) as img:
            found.append((img.format, img.size, data))
    return found


def _through_the_pipeline(lab: Lab, images, prefix: str) -> list[tuple[str, tuple[int, int], bytes]]:
    sent = upload.push(lab, images, concurrency=4, progress=False, prefix=prefix)
    assert (sent["status"] == 200).all(), sent[sent["status"] != 200].to_dict("records")
    rows = upload.wait_for(lab, sent["key"], timeout_s=150)
    assert (rows["outcome"] == "ok").all(), rows[rows["outcome"] != "ok"][["key", "code", "error"]].to_dict("records")
    return _outputs(lab, rows)


def _deploy_with_the_npm_client(lab: Lab, name: str, action: pipeline.ActionDeployment) -> dict:
    """Deploy ``action`` (a zip) as ``name`` with the official ``openwhisk`` npm client; the stored
    action as ``deploy-action.js`` prints it. The key and the bound parameters go through the
    environment and stdin, never argv."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    assert not missing, f"deploying with the npm client needs {missing} on PATH. Hint: install Node.js 18 or newer."
    assert action.binary
    _install()
    env = {**os.environ, "OW_APIHOST": lab.endpoint("faas"), "OW_AUTH": lab.ctx.secrets.faas_auth.get_secret_value()}
    if lab.ctx.tls:  # the native lab serves TLS with its own CA
        env["NODE_EXTRA_CA_CERTS"] = str(lab.ctx.tls.ca_file)
    spec = {"name": name, "zip": str(action.file), "kind": action.kind, "main": action.main, "params": action.params,
            "annotations": action.annotations, "limits": action.limits}
    done = subprocess.run(["node", DEPLOY_SCRIPT.name], cwd=SUITE, env=env, input=json.dumps(spec),
                          capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"deploy-action.js failed: {done.stderr}"
    return json.loads(done.stdout)


def test_the_zip_deployed_by_the_npm_client_resizes_through_the_pipeline_as_the_source_does(pipe: Lab,
                                                                                           tmp_path: Path) -> None:
    images = generate_pool(6, seed=1414, sizes=[(1600, 1200), (900, 1400), (640, 480)],
                           mix={"jpeg": 2, "png": 1, "png_alpha": 1, "gif": 1})
    run = uuid.uuid4().hex[:8]
    from_source = _through_the_pipeline(pipe, images, f"zip-{run}/source/")
    try:
        action = pipeline.action_deployment(pipe, form="zip", prewarm=True)
        deployed = _deploy_with_the_npm_client(pipe, pipeline.ACTION, action)
        assert deployed["name"] == pipeline.ACTION and deployed["binary"] is True
        assert deployed["kind"] == action.kind and deployed["limits"] == {**deployed["limits"], **action.limits}
        assert {a["key"]: a["value"] for a in deployed["annotations"]}["prewarm"] is True
        assert "params" not in deployed and "parameters" not in deployed  # no credential printed
        # labkit's own client finds the very action it would deploy (code, parameters, limits,
        # annotations) and leaves it alone: the npm client deployed the same thing.
        assert pipeline.deploy_action(pipe, prewarm=True, form="zip")["version"] == deployed["version"]
        from_zip = _through_the_pipeline(pipe, images, f"zip-{run}/zip/")
    finally:
        assert not pipeline.deploy_action(pipe, prewarm=True)["binary"]  # later tests see the default
    assert [(fmt, size) for fmt, size, _ in from_zip] == [(fmt, size) for fmt, size, _ in from_source]
    assert [data for *_, data in from_zip] == [data for *_, data in from_source]  # the resize is deterministic

    # The zip holds the pinned libraries, and they, not labkit's own, are what the action imports.
    path = build_action_zip(pipe.ctx.config.cache_dir)  # the deployed one, from the cache
    layout = zip_layout(path.read_bytes())
    assert {name: layout["packages"].get(name) for name in pins()} == pins()
    with zipfile.ZipFile(path) as zipped:
        zipped.extractall(tmp_path / "action")
    where = run_activated(tmp_path / "action", "import importlib.util, PIL.Image, minio, urllib3\n"
                                               "spec = importlib.util.spec_from_file_location('a', '__main__.py')\n"
                                               "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
                                               "print(PIL.Image.__file__, minio.__file__, urllib3.__file__)")
    assert all(Path(f).is_relative_to(tmp_path / "action" / SITE_PACKAGES) for f in where.split()), where

    # `labkit action zip` hands out that same cached zip.
    out = tmp_path / "resize.zip"
    env = {"LABKIT_CACHE_DIR": str(pipe.ctx.config.cache_dir), "PATH": os.environ.get("PATH", "")}
    result = CliRunner().invoke(main, ["action", "zip", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == path.read_bytes() and f"pillow {pins()['pillow']}" in result.output


def test_the_action_deploys_into_a_package_that_holds_its_credentials(pipe: Lab) -> None:
    key = f"zip-{uuid.uuid4().hex[:8]}/package/photo.jpg"
    image = generate_pool(1, seed=1415, sizes=[(1200, 900)])[0]
    # Stored through the gateway that sends no event: only the direct invoke below resizes it.
    pipe.s3("storage-out").put_object("dit247", key, io.BytesIO(image.data), len(image.data),
                                      content_type=image.content_type)
    deployed = pipeline.deploy_action(pipe, concurrency=1, form="zip", package=PACKAGE)
    try:
        assert deployed["path"] == f"{PACKAGE}/{pipeline.ACTION}" and deployed["binary"]
        with pipe.faas() as faas:
            bound = {p["key"] for p in faas.get_package(PACKAGE)["parameters"]}
            assert {"s3_endpoint", "s3_access_key", "s3_secret_key", "target_bucket"} <= bound
            result = faas.invoke(deployed["path"], {"bucket": "dit247", "key": key}, result=True)
            assert result["key_out"] == output_key(key)
            # Unchanged, it is left alone (no new version, its warm workers kept).
            assert pipeline.deploy_action(pipe, concurrency=1, form="zip", package=PACKAGE)["version"] == \
                deployed["version"]
        assert read_output(pipe, result["key_out"]).size == (640, 480)
    finally:
        with pipe.faas() as faas:
            faas.delete_package(PACKAGE, force=True)
    with pipe.faas() as faas:  # the pipeline's own action is untouched
        assert faas.get_action(pipeline.ACTION)["exec"]["binary"] is False
