"""The package data that pyproject.toml declares exists, so the wheel carries it (the data checksums of
flowvi_experiments.data; the configs are read from a clone, configs/, and are not package data)."""

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_data_entry_matches_a_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    assert package_data, "no package data declared"
    for package, patterns in package_data.items():
        folder = ROOT / "src" / package.replace(".", "/")
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: {pattern} matches no file under {folder}"



@pytest.mark.parametrize("missing", [["yaml"], ["matplotlib", "tqdm"]])
def test_flowvi_without_the_experiments_extra_says_how_to_install_it(missing):
    """The console command of a library-only install (no experiments extra) ends in one sentence before any work:
    not a traceback, and not a failure at the end of a run when its figure is drawn (matplotlib)."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({missing!r}))\n"  # their imports fail: not installed
            "from flowvi_experiments.cli.main import main\n"
            "sys.exit(main(['train', '--help']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    names = {"yaml": "pyyaml"}
    listed = ", ".join(names.get(m, m) for m in missing)
    assert proc.stderr.strip().splitlines() == [
        f"flowvi: error: the flowvi command needs the experiments extra ({listed} "
        f"{'is' if len(missing) == 1 else 'are'} not installed): pip install -c constraints.txt 'flowvi[experiments]'"]
