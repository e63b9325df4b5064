"""A Go program built with a patched dependency (``[versitygw.patch]`` in stack/versions.toml):
the patched copy is what the build uses, a patch that no longer fits stops the install with one
line, and a changed patch gets a cache entry of its own. Nothing here builds; the last test
reads the installed versitygw, when there is one."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit.errors import LabConfigError
from labkit.stack import install
from labkit.stack.gomod import GoPatch
from labkit.stack.install import GoBinary
from labkit.stack.services.storage import versitygw_step
from labkit.stack.versions import pin

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="needs the go command")

PATCH = GoPatch("example.com/dep", "v1.2.3", "writer.go", "ttl = 15 * time.Second", "ttl = 1 * time.Second")
WRITER = "package dep\n\nfunc f() {\n\tttl = 15 * time.Second\n}\n"


def fake_modules(root: Path, writer: str = WRITER, requires: str = "v1.2.3") -> dict[str, Path]:
    """A main module requiring the dependency, and the dependency, as the module cache would hold them."""
    main, dep = root / "cache" / "main", root / "cache" / "dep"
    main.mkdir(parents=True)
    dep.mkdir()
    (main / "go.mod").write_text(f"module example.com/main\n\ngo 1.22\n\nrequire example.com/dep {requires}\n")
    (dep / "go.mod").write_text("module example.com/dep\n\ngo 1.22\n")
    (dep / "writer.go").write_text(writer)
    for path in (main / "go.mod", dep / "go.mod", dep / "writer.go"):
        path.chmod(0o444)  # read-only, like the module cache
    return {"example.com/main": main, "example.com/dep": dep}


def step(patch: GoPatch | None = PATCH) -> GoBinary:
    return GoBinary("prog", "v0.1.0", package="example.com/main/cmd/prog", binary="prog",
                    module="example.com/main", patch=patch)


def lay_out(tmp_path: Path, monkeypatch, patch: GoPatch = PATCH, **modules) -> tuple[Path, Path]:
    dirs = fake_modules(tmp_path, **modules)
    monkeypatch.setattr(install, "go_module_dir", lambda module, version: dirs[module])
    log = tmp_path / "install.log"
    return step(patch).patched_sources(tmp_path / "src", log), log


@needs_go
def test_the_build_uses_a_patched_copy_and_the_module_cache_is_untouched(tmp_path, monkeypatch) -> None:
    main, log = lay_out(tmp_path, monkeypatch)
    patched = (tmp_path / "src" / "patched" / "writer.go").read_text()
    assert "ttl = 1 * time.Second" in patched and "15 * time.Second" not in patched
    assert (tmp_path / "cache" / "dep" / "writer.go").read_text() == WRITER
    assert "replace example.com/dep => ../patched" in (main / "go.mod").read_text()
    assert "-replace=example.com/dep=../patched" in log.read_text()


@pytest.mark.parametrize("writer, found", [(WRITER.replace("15", "16"), 0), (WRITER + WRITER, 2)])
@needs_go
def test_a_patch_whose_text_is_not_there_once_stops_with_one_line(tmp_path, monkeypatch, writer, found) -> None:
    with pytest.raises(LabConfigError) as e:
        lay_out(tmp_path, monkeypatch, writer=writer)
    message = str(e.value)
    assert "\n" not in message
    assert f"finds its old text {found} times" in message and "the pin and the patch no longer match" in message


@needs_go
def test_a_patch_for_another_version_than_the_build_uses_stops_with_one_line(tmp_path, monkeypatch) -> None:
    with pytest.raises(LabConfigError) as e:
        lay_out(tmp_path, monkeypatch, requires="v1.2.4")
    assert "\n" not in str(e.value) and "requires v1.2.4" in str(e.value) and "no longer match" in str(e.value)


def test_the_cache_entry_changes_with_the_patch(tmp_path) -> None:
    other = dataclasses.replace(PATCH, new="ttl = 2 * time.Second")
    names = {s.target(tmp_path).name for s in (step(None), step(PATCH), step(other))}
    assert len(names) == 3
    assert step(None).target(tmp_path).name == "prog-v0.1.0"
    assert step(PATCH).target(tmp_path).name == f"prog-v0.1.0-patched-{PATCH.digest()}"


def test_versitygw_is_built_with_the_pinned_patch_of_kafka_go() -> None:
    built = versitygw_step()
    assert built.patch == GoPatch.from_pin(pin("versitygw")["patch"])
    assert (built.patch.module, built.patch.file) == ("github.com/segmentio/kafka-go", "writer.go")
    assert built.package.startswith(built.module + "/")
    assert built.target(Path("/c")).name.startswith(f"versitygw-{pin('versitygw')['version']}-patched-")


def _cached(module: str, version: str) -> Path:
    """A module's directory in the local module cache (never downloaded here)."""
    if shutil.which("go") is None:
        pytest.skip("needs the go command")
    root = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    escaped = "".join(f"!{c.lower()}" if c.isupper() else c for c in module)
    path = Path(root) / f"{escaped}@{version}"
    if not path.is_dir():
        pytest.skip(f"{module}@{version} is not in the module cache (run `labkit install`)")
    return path


def test_the_pinned_patch_fits_the_pinned_sources() -> None:
    built = versitygw_step()
    built.patch.check_required(_cached(built.module, built.version))
    text = (_cached(built.patch.module, built.patch.version) / built.patch.file).read_text()
    assert text.count(built.patch.old) == 1


def test_the_installed_versitygw_has_the_patched_writer_default() -> None:
    from labkit.stack.config import load_config

    binary = versitygw_step().target(load_config().cache_dir) / "versitygw"
    if shutil.which("go") is None or not binary.is_file():
        pytest.skip("versitygw is not installed (run `labkit install`)")
    code = subprocess.run(["go", "tool", "objdump", "-s", r"kafka-go\.NewWriter$", str(binary)],
                          capture_output=True, text=True, check=True).stdout
    # The writer's metadata TTL default as an immediate, in nanoseconds: 1 s, not 15 s.
    assert "$0x3b9aca00" in code and "$0x37e11d600" not in code
