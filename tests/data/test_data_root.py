"""Data-root resolution: argument, $GCA_DATA_ROOT, ../shared/data and errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gca.data import resolve_data_root
from gca.data.root import repo_root


def test_resolve_data_root_explicit_and_env(tmp_path, monkeypatch):
    assert resolve_data_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("GCA_DATA_ROOT", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
    assert resolve_data_root(tmp_path / ".") == tmp_path.resolve()  # argument wins
    monkeypatch.setenv("GCA_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"from environment variable GCA_DATA_ROOT") as e:
        resolve_data_root()
    assert str(tmp_path / "gone") in str(e.value)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        resolve_data_root(f)
    with pytest.raises(FileNotFoundError, match="given as argument"):
        resolve_data_root(tmp_path / "missing")


def test_resolve_data_root_relative_to_cwd(tmp_path, monkeypatch):
    work = tmp_path / "proj"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_root() == (tmp_path / "shared" / "data").resolve()


def test_resolve_data_root_default_and_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = repo_root() / ".." / "shared" / "data"
    assert repo_root() == Path(__file__).resolve().parents[2]
    if expected.is_dir():
        assert resolve_data_root() == expected.resolve()
    monkeypatch.setattr("gca.data.root.repo_root", lambda: tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="No data root found.*GCA_DATA_ROOT"):
        resolve_data_root()
    assert os.getcwd() == str(tmp_path)
