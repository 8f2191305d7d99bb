"""The package data that pyproject.toml declares exists, so the wheel carries it (the data checksums of
flowvi_experiments.data; the configs are read from a clone, configs/, and are not package data)."""

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
