"""Fixtures of the language demo's tests."""

import pytest


@pytest.fixture
def no_tools(tmp_path, monkeypatch):
    """A PATH with no program on it."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty
