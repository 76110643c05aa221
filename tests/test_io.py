"""Atomic writes of files and folders: permissions kept, nothing left behind."""

import os
import stat

import pytest

from hybrid_estimators._io import atomic_folder, atomic_write


@pytest.fixture
def umask():
    """``os.umask``, to set the process umask; restored after the test."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_keeps_the_permissions_of_the_replaced_file(tmp_path, umask):
    target = tmp_path / "config.yaml"
    target.write_text("a: 1\n")
    target.chmod(0o644)
    umask(0o077)  # a new file would be 0o600: the old file's mode must win

    atomic_write(target, "a: 2\n")

    assert target.read_text() == "a: 2\n"
    assert mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_atomic_write_keeps_a_private_file_private(tmp_path, umask):
    target = tmp_path / "secret.json"
    target.write_bytes(b"{}")
    target.chmod(0o600)
    umask(0o022)

    atomic_write(target, b'{"a": 1}')

    assert target.read_bytes() == b'{"a": 1}'
    assert mode(target) == 0o600


def test_atomic_write_gives_a_new_file_what_open_would(tmp_path, umask):
    umask(0o027)
    target = atomic_write(tmp_path / "sub" / "new.txt", "caf\u00e9")

    assert target == tmp_path / "sub" / "new.txt"
    assert target.read_bytes() == "caf\u00e9".encode("utf-8")
    assert mode(target) == 0o640


def test_failed_atomic_write_leaves_the_target_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "model.json"
    target.write_text("old")

    def fail_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new")

    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_atomic_folder_publishes_0755_whatever_the_umask(tmp_path, umask):
    umask(0o022)
    with atomic_folder(tmp_path / "model") as staging:
        assert staging.parent == tmp_path and staging.name != "model"
        assert not (tmp_path / "model").exists()  # nothing visible before the end
        (staging / "weights.bin").write_bytes(b"\0" * 8)
        (staging / "1_Pooling").mkdir()
        (staging / "1_Pooling" / "config.json").write_text("{}")

    folder = tmp_path / "model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert mode(folder) == 0o755  # not mkdtemp's 0o700
    assert mode(folder / "1_Pooling") == 0o755
    assert mode(folder / "weights.bin") == 0o644
    assert (folder / "1_Pooling" / "config.json").read_text() == "{}"


def test_atomic_folder_gives_the_requested_mode(tmp_path):
    with atomic_folder(tmp_path / "private", mode=0o700) as staging:
        (staging / "a").write_text("a")
    assert mode(tmp_path / "private") == 0o700


def test_failed_atomic_folder_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_folder(tmp_path / "model") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_keeps_the_folder_another_process_published(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "mine").write_text("mine")
        target.mkdir()
        (target / "theirs").write_text("theirs")

    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
