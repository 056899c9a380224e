"""The sdist is a complete source release: built as a release is (``python -m build``, isolated,
with the build requirements pyproject.toml declares) from a copy of the checkout, without one
setuptools warning; it holds every tracked file but the CI's and git's own, the README's images,
no build products; the wheel built from it ships the whole package; and installed in a fresh venv,
the tests run from the unpacked sdist pass there.

The fresh venv gets tradestats only from that wheel. Its dependencies come from the interpreter
running this test through a ``.pth`` line (no download, seconds): ``--system-site-packages`` would
not do, since a venv made from a venv sees the base interpreter's site-packages, not the outer
venv's. That line adds the directory alone, without running its ``.pth`` files, so the
checkout's editable install (``src/`` on the path) stays out; the tests check that the
tradestats they import is the venv's. The build itself needs setuptools and Cython from the
package index, like any ``pip install`` of the sdist. About a minute on two cores, most of it the
C compiler; everything is made in one temporary directory, removed at the end.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

if not os.environ.get("CI"):
    pytest.importorskip("build", reason="pip install build (in the test extras)")

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300
TEST_TIMEOUT = 240

#: What setuptools (and distutils before it) prints when it warns: "warning: no previously-included
#: files ...", "SetuptoolsDeprecationWarning", "BuildBackendWarning: ...", and the "!!" lines
#: around its banners. Not pip's own "WARNING:" lines (about this machine's package indexes), and
#: not the C compiler's "file.h:40:17: warning: ..." (the engine's code, not the packaging).
SETUPTOOLS_WARNING = re.compile(r"^\s*warning:|Warning\b|^\s*!!\s*$", re.MULTILINE)

#: A fast part of the suite that touches what an sdist used to miss: the server's configuration,
#: the OpenAPI document with schemathesis (tests/schemathesis.toml), the migration of a version 1
#: store (tests/data), deploy/'s files, and the engine.
SUITE_SUBSET = (
    "tests/test_config.py",
    "tests/test_openapi.py",
    "tests/test_migration.py",
    "tests/test_deploy.py",
    "tests/test_engine.py::test_paper_example",
    "tests/test_engine.py::test_bad_element_rejected_nothing_stored",
    "tests/test_engine.py::test_store_basics",
    "tests/test_engine.py::test_engine_imports_without_falcon",
)


def clean_environment(**extra: str) -> dict:
    """This process's environment without what would bend a build or a run: the checkout on
    PYTHONPATH, TRADESTATS_* settings, byte-compiling turned off (setuptools says so in a
    warning line)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS")
           and not key.startswith("TRADESTATS_")}
    env.update(extra)
    return env


def run(command: list, cwd: Path, timeout: float, env: dict | None = None) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env or clean_environment(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}"
    return done.stdout


def tracked_files() -> list[str] | None:
    """The checkout's files (tracked, and new ones not ignored), or None outside a git checkout."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
    return sorted({name for name in listing.decode().split("\0") if name})


def copy_sources(destination: Path) -> None:
    """The checkout as a clean clone would have it (plus work not yet committed), so that the
    build writes nothing into the checkout; outside git, the whole directory but caches."""
    names = tracked_files()
    if names is None:
        shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(
            "__pycache__", ".pytest_cache", "build", "dist", "*.egg-info"))
        return
    for name in names:
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


class Release:
    """Everything the tests below look at, made once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        sources = work / "checkout"
        copy_sources(sources)
        dist = work / "dist"
        self.sdist_log = run([sys.executable, "-m", "build", "--sdist", "--outdir", dist, sources],
                             work, BUILD_TIMEOUT)
        (self.sdist,) = dist.glob("tradestats-*.tar.gz")
        with tarfile.open(self.sdist) as archive:
            top = self.sdist.name[: -len(".tar.gz")]
            self.members = sorted(member.name[len(top) + 1:] for member in archive.getmembers()
                                  if member.isfile())
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and 3.9.17, 3.10.12)
                archive.extractall(work / "unpacked", filter="data")
            else:
                archive.extractall(work / "unpacked")
        self.unpacked = work / "unpacked" / top
        # What pip does with an sdist, but with the log kept: an isolated build of the wheel.
        self.wheel_log = run([sys.executable, "-m", "build", "--wheel", "--outdir", dist,
                              self.unpacked], work, BUILD_TIMEOUT)
        (self.wheel,) = dist.glob("tradestats-*.whl")
        with zipfile.ZipFile(self.wheel) as archive:
            self.wheel_files = sorted(archive.namelist())
            self.metadata = archive.read(next(name for name in self.wheel_files
                                              if name.endswith(".dist-info/METADATA"))).decode()
        self.venv = work / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", self.venv], work, 60)
        self.python = self.venv / "bin" / "python"
        # The dependencies (and pytest) of the interpreter running this test, after the venv's own.
        site = Path(run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        work, 30).strip())
        outer = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
        (site / "outer-dependencies.pth").write_text("".join(f"{path}\n" for path in outer))
        run([sys.executable, "-m", "pip", "--python", self.python, "install", "--no-deps",
             "--no-index", "--quiet", self.wheel], work, 120)


@pytest.fixture(scope="module")
def release():
    work = Path(tempfile.mkdtemp(prefix="tradestats-packaging-"))
    try:
        yield Release(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_sdist_and_the_wheel_build_without_a_setuptools_warning(release):
    for log in (release.sdist_log, release.wheel_log):
        found = SETUPTOOLS_WARNING.findall(log)
        assert not found, f"setuptools warned {len(found)} times:\n{log}"


def test_the_sdist_holds_every_file_of_the_checkout_and_no_build_product(release):
    members = set(release.members)
    for needed in ("tests/conftest.py", "tests/schemathesis.toml", "docs/page.png", "README.md",
                   "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in"):
        assert needed in members, needed
    assert any(name.startswith("tests/data/store-v1/") for name in members)
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", (ROOT / "README.md").read_text())
    assert images, "the README shows no image any more: update this test"
    for image in images:
        if "://" not in image:
            assert image in members, f"the README's image {image} is not in the sdist"
    products = [name for name in members if re.search(r"\.(so|pyd|c|o|py[cod])$|__pycache__/", name)]
    assert not products, products
    names = tracked_files()
    if names is None:
        pytest.skip("not a git checkout: the sdist's own list is all there is to compare")
    # Everything but the CI's script and git's own files (.ci/run, .gitignore) ships.
    missing = [name for name in names if not name.startswith(".") and name not in members]
    assert not missing, f"files of the checkout missing from the sdist: {missing}"


def test_the_wheel_built_from_the_sdist_ships_the_whole_package(release):
    package = "src/tradestats/"
    expected = {f"tradestats/{name[len(package):]}" for name in release.members
                if name.startswith(package)
                and (re.search(r"\.(py|pyx|pxd|pyi|h)$|/py\.typed$", name)
                     or name.startswith(package + "web/static/"))}
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    expected |= {f"tradestats/{Path(name).stem}{suffix}" for name in release.members
                 if re.fullmatch(r"src/tradestats/[^/]+\.pyx", name)}
    shipped = {name for name in release.wheel_files if ".dist-info/" not in name}
    assert shipped == expected, (sorted(shipped - expected), sorted(expected - shipped))
    assert "License-Expression: MIT" in release.metadata
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in release.wheel_files)


def test_the_tests_run_from_the_unpacked_sdist(release):
    env = clean_environment(PYTHONDONTWRITEBYTECODE="1")
    where = run([release.python, "-c", ("import tradestats, tradestats.engine as e; "
                                        "print(tradestats.__file__); print(e.__file__)")],
                release.unpacked, 30, env)
    assert all(line.startswith(str(release.venv)) for line in where.split()), where
    # Every test module and the conftest import: nothing they read is missing.
    collected = run([release.python, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only",
                     "-q", "tests"], release.unpacked, TEST_TIMEOUT, env)
    assert re.search(r"^\d+ tests collected", collected, re.MULTILINE), collected
    outcome = run([release.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                   "--basetemp", release.work / "pytest", *SUITE_SUBSET],
                  release.unpacked, TEST_TIMEOUT, env)
    summary = outcome.strip().splitlines()[-1]
    print(f"from the unpacked sdist: {collected.strip().splitlines()[-1]}; {summary}")
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error|skipped", summary), \
        outcome
