"""Fixtures the engine tests share."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def stale_graph_metadata(monkeypatch) -> Callable[[Callable[[dict], dict]], None]:
    """``stale(edit)``: every exported step graph read from now on reports ``edit(its metadata)`` (a graph of an
    older comcloak, or of other settings, without exporting one)."""
    from comcloak.engine.backends import exported

    real = exported.read_export_metadata

    def stale(edit: Callable[[dict], dict]) -> None:
        monkeypatch.setattr(exported, "read_export_metadata", lambda path: edit(dict(real(path))))

    return stale
