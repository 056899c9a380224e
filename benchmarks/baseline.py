"""Build the engine of another git revision as the importable package `tradestats_baseline`.

For A/B benchmarks: the engine as it was at REF (default: DEFAULT_REF, the engine before the
rewrite of issue 17) is built once into a cache directory keyed by its commit and the Python
ABI, /tmp/tradestats-baseline-<sha>-<cache tag>/, and imported from there next to the current
`tradestats`. Only the top-level modules of src/tradestats are copied (the engine, its .pxd
files and the pure-Python modules it imports); their `tradestats.` imports are renamed.

The build uses that revision's own setup.py (so its compiler flags and directives), and its
[build-system] requirements (Cython, setuptools) installed with `pip install --target` into
/tmp/tradestats-build-tools-<cache tag>/ when the running Python lacks them, never into a venv.

    python benchmarks/baseline.py                      # build (or find) the default baseline
    python benchmarks/baseline.py --baseline-ref HEAD~3
"""
import argparse
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_REF = "36c74dd"
REPO = Path(__file__).resolve().parent.parent
PACKAGE = "tradestats_baseline"
TAG = sys.implementation.cache_tag  # e.g. cpython-311: a build serves one Python ABI
CACHE_ROOT = Path(os.environ.get("TRADESTATS_BASELINE_CACHE", tempfile.gettempdir()))
STAMP = ".built"
IMPORT_LINE = re.compile(r"^(\s*(?:from|import|cimport)\s+)tradestats(?=[.\s])", re.MULTILINE)


def git(*args, text=True):
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=text).stdout


def resolve(ref):
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        raise SystemExit(f"baseline: {ref!r} is not a commit of {REPO}") from None


def cache_dir(sha):
    return CACHE_ROOT / f"tradestats-baseline-{sha[:12]}-{TAG}"


def build_requirements(sha):
    """The revision's [build-system] requires, or Cython and setuptools if it cannot be read."""
    try:
        import tomllib
        text = git("show", f"{sha}:pyproject.toml")
        return tomllib.loads(text)["build-system"]["requires"]
    except (ImportError, KeyError, subprocess.CalledProcessError):
        return ["setuptools>=64", "Cython>=3.0"]


def build_tools(requirements):
    """A directory to put on PYTHONPATH so that Cython imports ('' if it already does)."""
    try:
        import Cython  # noqa: F401
        return ""
    except ImportError:
        pass
    tools = CACHE_ROOT / f"tradestats-build-tools-{TAG}"
    probe = [sys.executable, "-c", "import Cython"]
    env = dict(os.environ, PYTHONPATH=str(tools))
    if subprocess.run(probe, check=False, env=env, capture_output=True).returncode != 0:
        print(f"baseline: installing {' '.join(requirements)} into {tools}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--target", str(tools), "--upgrade", *requirements], check=True)
    return str(tools)


def export_sources(sha, dest):
    """Copy src/tradestats/* (top level only) of `sha` into dest/PACKAGE, imports renamed."""
    archive = git("archive", "--format=tar", sha, "src/tradestats", "setup.py", text=False)
    pkg = dest / PACKAGE
    pkg.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            path = Path(member.name)
            if not member.isfile():
                continue
            if path.name == "setup.py" and len(path.parts) == 1:
                text = tar.extractfile(member).read().decode()
                text = text.replace("src/tradestats/", f"{PACKAGE}/")
                text = re.sub(r"\btradestats\.(?=\w)", f"{PACKAGE}.", text)
                (dest / "setup.py").write_text(text)
            elif path.parent == Path("src/tradestats") and path.suffix in (".py", ".pyx", ".pxd"):
                text = tar.extractfile(member).read().decode()
                (pkg / path.name).write_text(IMPORT_LINE.sub(rf"\1{PACKAGE}", text))


def build(sha, dest):
    """Build the revision's engine in a scratch directory, then move it to dest atomically."""
    scratch = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        export_sources(sha, scratch)
        env = dict(os.environ)
        tools = build_tools(build_requirements(sha))
        if tools:
            env["PYTHONPATH"] = tools
        result = subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
                                check=False, cwd=scratch, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the baseline {sha[:12]} failed:\n"
                               f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        shutil.rmtree(scratch / "build", ignore_errors=True)
        (scratch / STAMP).write_text(sha + "\n")
        try:
            scratch.rename(dest)
        except OSError:  # another process finished the same build first
            if not (dest / STAMP).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_built(ref=DEFAULT_REF):
    """The cache directory holding PACKAGE built from `ref` (built now if missing)."""
    sha = resolve(ref)
    dest = cache_dir(sha)
    if not (dest / STAMP).exists():
        shutil.rmtree(dest, ignore_errors=True)
        print(f"baseline: building {ref} ({sha[:12]}) into {dest}", file=sys.stderr)
        build(sha, dest)
    return dest


def load_baseline(ref=DEFAULT_REF):
    """Import and return the `tradestats_baseline` package built from `ref`."""
    dest = str(ensure_built(ref))
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None:
        if Path(loaded.__file__).parent.parent == Path(dest):
            return loaded
        raise RuntimeError(f"{PACKAGE} is already imported from {loaded.__file__}; "
                           "one baseline per process")
    sys.path.insert(0, dest)
    return importlib.import_module(PACKAGE)


def cython_version(module):
    """'Cython X.Y.Z' that generated an engine's C file next to it, if the file is there."""
    c_file = Path(module.__file__).parent / "engine.c"
    try:
        with open(c_file) as f:
            match = re.search(r"Generated by (Cython \S+)", f.readline())
    except OSError:
        return "Cython ?"
    return match.group(1) if match else "Cython ?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default=DEFAULT_REF)
    args = parser.parse_args()
    module = load_baseline(args.baseline_ref)
    print(f"{PACKAGE} {resolve(args.baseline_ref)[:12]} ({cython_version(module)}): "
          f"{Path(module.__file__).parent}")


if __name__ == "__main__":
    main()
