"""Atomic writes keep the usual file permissions and leave nothing behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from dynvae.utils import atomic_write_json, atomic_write_text


def test_new_file_gets_umask_permissions_and_existing_file_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "a.json"
        atomic_write_json(target, {"x": 1})
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        target.chmod(0o600)
        atomic_write_text(target, "again")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert target.read_text() == "again"
    finally:
        os.umask(old)


def test_failed_write_leaves_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "b.json"
    atomic_write_text(target, "kept")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
