"""What an install costs: size on disk and package count of the core install, GrowthBook's SDK and `rollout[all]`.

Each is installed from scratch into its own fresh virtual environment (no pip,
no setuptools in it, so only what the install brought is counted), from the
wheel of this tree. The helpers here (build the wheel, make a venv, install
into it) are also what tests/test_packaging.py uses, so the benchmark and the
test install the same way.

    python -m bench.install_size
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import table  # noqa: E402


def build_wheel(out: Path) -> Path:
    """The wheel of this tree (`pip wheel --no-deps`), built into `out`."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = out.glob("rollout-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A new virtual environment without pip; returns its python. Installs go through our own pip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def install(python: Path, *requirements: str) -> None:
    """pip install into the venv of `python` (pip's --python: one pip, many environments)."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                           "--disable-pip-version-check", *requirements],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{done.stderr[-3000:]}")


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    return Path(out)


def distributions(python: Path) -> list[str]:
    """The names of the distributions installed in the venv."""
    return sorted(p.name.split("-")[0].lower() for p in site_packages(python).glob("*.dist-info"))


def size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def measure(label: str, name: str, *requirements: str, work: Path) -> dict[str, float | str]:
    python = fresh_venv(work / name)
    started = time.monotonic()
    install(python, *requirements)
    seconds = time.monotonic() - started
    site = site_packages(python)
    entries = sorted(((size_bytes(p) if p.is_dir() else p.stat().st_size, p.name) for p in site.iterdir()
                      if not p.name.endswith(".dist-info")), reverse=True)
    largest = ", ".join(f"{name} {size / 2**20:.0f}" for size, name in entries[:3])
    return {"label": label, "packages": len(distributions(python)), "mib": size_bytes(site) / 2**20,
            "seconds": seconds, "largest": largest}


def run() -> tuple[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel = build_wheel(work / "dist")
        results = [
            measure("rollout (core: the SDK)", "core", str(wheel), work=work),
            measure("growthbook (its Python SDK)", "growthbook", "growthbook", work=work),
            measure("rollout[all]", "all", f"rollout[all] @ {wheel.as_uri()}", work=work),
        ]
    rows = [[str(r["label"]), str(r["packages"]), f"{r['mib']:.1f}", str(r["largest"]), f"{r['seconds']:.0f}"]
            for r in results]
    figures = {f"install_{i}_{key}": float(r[key]) for i, r in enumerate(results) for key in ("packages", "mib")}
    md = table(["install (fresh venv, from this tree's wheel)", "packages", "MiB on disk", "largest three (MiB)",
                "install s"], rows)
    md += ("\n\nPackages count every distribution in the venv's site-packages (the project itself included); "
           "the venvs are made without pip, so none of it is tooling. Install time is from the local package "
           "mirror and pip's cache, so it shows the relative weight, not a download over the internet.")
    return md, figures


if __name__ == "__main__":
    print(run()[0])
