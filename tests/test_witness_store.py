"""The witness's store: written atomically, read back, a damaged or missing
file an error (never epoch 0), the directory locked to one witness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zmqfail.errors import WitnessError
from zmqfail.txlog import fsutil
from zmqfail.witness import store
from zmqfail.witness.logic import Granted
from zmqfail.witness.store import STORE_NAME, Store


def opened(d: Path) -> tuple[Store, Granted]:
    s = Store(d)
    return s, s.open()


def test_a_new_directory_starts_at_epoch_0_and_writes_its_store(tmp_path: Path) -> None:
    d = tmp_path / "w"
    s, g = opened(d)
    assert g == Granted()
    assert (d / STORE_NAME).is_file()  # from now on a missing file is a loss
    assert (d / "witness.pid").read_text() == f"{os.getpid()}\n"
    s.close()
    assert sorted(p.name for p in d.iterdir()) == ["WITNESS", STORE_NAME]


def test_a_saved_grant_is_read_back(tmp_path: Path) -> None:
    s, _ = opened(tmp_path)
    s.save(Granted(7, "b"))
    s.close()
    s2, g = opened(tmp_path)
    assert g == Granted(7, "b")
    s2.close()
    text = json.loads((tmp_path / STORE_NAME).read_text())
    assert (text["epoch"], text["leader"]) == (7, "b")  # an operator can read it


def test_save_is_atomic_and_syncs_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = opened(tmp_path)
    calls: list[str] = []
    real_fsync, real_replace, real_dir = os.fsync, os.replace, fsutil.fsync_dir

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        tmp = Path(src).parent == tmp_path and Path(src).name.startswith(f".{STORE_NAME}.")
        calls.append(f"rename {'temp file' if tmp else src} -> {Path(dst).name}")
        real_replace(src, dst)

    def fsync_dir(p: Path) -> None:
        calls.append(f"fsync dir {p.name}")
        real_dir(p)  # its own fsync shows as the last call

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fsutil, "fsync_dir", fsync_dir)
    s.save(Granted(2, "a"))
    assert calls == [
        "fsync",
        f"rename temp file -> {STORE_NAME}",
        f"fsync dir {tmp_path.name}",
        "fsync",
    ]
    s.close()


def test_a_failed_write_is_an_error_and_keeps_the_old_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = opened(tmp_path)
    s.save(Granted(1, "a"))

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WitnessError, match=r"cannot write witness store .*No space left"):
        s.save(Granted(2, "b"))
    monkeypatch.undo()
    s.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    s2, g = opened(tmp_path)
    assert g == Granted(1, "a")
    s2.close()


def _damaged(tmp_path: Path, data: bytes) -> str:
    s, _ = opened(tmp_path)
    s.save(Granted(3, "b"))
    s.close()
    (tmp_path / STORE_NAME).write_bytes(data)
    with pytest.raises(WitnessError) as info:
        Store(tmp_path).open()
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / STORE_NAME) in msg
    assert not (tmp_path / "witness.pid").exists()  # a failed open leaves nothing behind
    return msg


def _good() -> dict[str, object]:
    return json.loads(store.encode(Granted(3, "b")))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"epoch": 3', "not JSON"),
        (b"[3, 1]", "expected an object"),
        (json.dumps({**_good(), "extra": 1}).encode(), "expected an object"),
        (json.dumps({**_good(), "format": 2}).encode(), "format 2"),
        (json.dumps({**_good(), "epoch": -1}).encode(), "epoch -1"),
        (json.dumps({**_good(), "epoch": True}).encode(), "epoch True"),
        (json.dumps({**_good(), "leader": ""}).encode(), "does not fit epoch 3"),
        (json.dumps({**_good(), "epoch": 4}).encode(), "crc mismatch"),
        (json.dumps({**_good(), "leader": "a"}).encode(), "crc mismatch"),
    ],
)
def test_a_damaged_store_is_a_one_line_error(tmp_path: Path, data: bytes, reason: str) -> None:
    msg = _damaged(tmp_path, data)
    assert "damaged witness store" in msg and reason in msg, msg
    assert "remove the witness's data dir" in msg  # what to do, and when it is safe


def test_a_deleted_store_is_an_error_not_epoch_0(tmp_path: Path) -> None:
    s, _ = opened(tmp_path)
    s.save(Granted(5, "a"))
    s.close()
    # Deleted by hand after a clean stop: missed, not replaced by epoch 0.
    (tmp_path / STORE_NAME).unlink()
    with pytest.raises(WitnessError, match=f"holds other files but no {STORE_NAME}"):
        Store(tmp_path).open()


def test_a_directory_of_other_things_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()  # the operator pointed it at the servers' directory
    with pytest.raises(WitnessError, match="not the witness's data dir"):
        Store(tmp_path).open()
    assert not (tmp_path / STORE_NAME).exists()


def test_an_interrupted_first_start_counts_as_new(tmp_path: Path) -> None:
    (tmp_path / f".{STORE_NAME}.x1.tmp").write_bytes(b"{")
    s, g = opened(tmp_path)
    assert g == Granted()
    s.close()


def test_an_unreadable_store_is_an_error(tmp_path: Path) -> None:
    s, _ = opened(tmp_path)
    s.close()
    (tmp_path / STORE_NAME).unlink()
    (tmp_path / STORE_NAME).mkdir()
    with pytest.raises(WitnessError, match=r"cannot read witness store .*Is a directory"):
        Store(tmp_path).open()


def test_a_file_where_the_directory_should_be_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "w").write_text("x")
    with pytest.raises(WitnessError, match="is not a directory"):
        Store(tmp_path / "w").open()


def test_one_witness_per_directory(tmp_path: Path) -> None:
    s, _ = opened(tmp_path)
    with pytest.raises(WitnessError, match=rf"in use by another witness \(pid {os.getpid()}\)"):
        Store(tmp_path).open()
    s.close()
    s2, _ = opened(tmp_path)  # released with the first
    s2.close()
