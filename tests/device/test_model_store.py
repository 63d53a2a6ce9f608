"""The model store: install from a folder, a tar or a USB stick, activate, roll back, remove; and every fault (a
tampered bundle or tar, a truncated or unsafe tar, a full disk, an incompatible bundle, a busy store) refused with
one sentence, leaving nothing half-installed and the old model active."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from device.config import parse_config
from device.errors import ModelError
from device.model.active import ACTIVE_FILE, ActivePointer, read_active, write_active
from device.model.archive import MAX_BUNDLE_BYTES, ArchiveError, write_bundle_tar
from device.model.bundle import bundle_folder, default_model_dir, open_checked_bundle
from device.model.signature import PROJECT_KEYS, SIGNATURE_FILE, SignatureError
from device.model.store import ModelStore
from device.records import RecordStore
from tests.helpers import STORE_TEST_BUNDLE, signed_copy, trusted

DEFAULT_ID = default_model_dir().name


@pytest.fixture
def unit(tmp_path, test_key):
    """A unit config (store + records in tmp_path) trusting the project key and the test key."""
    keys = [k.model_dump() for k in (*PROJECT_KEYS, trusted(test_key))]
    return parse_config({"model": {"type": "bundle", "store": str(tmp_path / "unit" / "models"), "trusted_keys": keys},
                         "records": {"folder": str(tmp_path / "unit" / "records"), "fsync": False}})


@pytest.fixture
def bundles(tmp_path, test_key):
    return {name: signed_copy(STORE_TEST_BUNDLE, tmp_path / "src", test_key, new_id=f"model-{name}")
            for name in ("a", "b")}


@pytest.fixture
def store(unit):
    records = RecordStore(unit.records.folder, fsync=False)
    s = ModelStore(unit.model, lambda action, detail, mid: records.audit("tester", action, detail, mid))
    s.records = records
    yield s
    records.close()


def actions(store) -> list[str]:
    return [a["action"] for a in store.records.audit_trail()]


def entries(store) -> set[str]:
    return {p.name for p in store.folder.iterdir()}


def test_install_checks_everything_switches_and_keeps_the_default_for_rollback(store, bundles, unit):
    result = store.install(bundles["a"])
    assert (result.model_id, result.previous, result.seeded_default) == ("model-a", DEFAULT_ID, DEFAULT_ID)
    pointer = read_active(store.folder)
    assert (pointer.active, pointer.previous, pointer.reason) == ("model-a", DEFAULT_ID, "install")
    assert entries(store) == {ACTIVE_FILE, ".lock", "model-a", DEFAULT_ID}
    assert sorted(p.name for p in (store.folder / "model-a").iterdir()) == \
        sorted(p.name for p in bundles["a"].iterdir())
    assert bundle_folder(unit.model) == store.folder / "model-a"
    assert open_checked_bundle(bundle_folder(unit.model), unit.model).card.id == "model-a"
    assert actions(store) == ["model_install_started",
                              "model_verified", "model_selftest_passed", "model_installed",  # the bundled default
                              "model_verified", "model_selftest_passed", "model_installed", "model_activated"]
    verified = json.loads(store.records.audit_trail()[4]["detail"])
    assert verified["signature"]["trusted"] and verified["signature"]["key_name"] == "test-key"


def test_install_from_a_tar_and_from_a_usb_stick(store, bundles, tmp_path):
    usb = tmp_path / "usb"
    write_bundle_tar(bundles["a"], usb / "model-a.tar")
    (usb / ".Trashes").mkdir()  # what sticks carry: skipped
    assert store.install(usb).model_id == "model-a"
    write_bundle_tar(bundles["b"], tmp_path / "b.tar")
    assert store.install(tmp_path / "b.tar").previous == "model-a"
    write_bundle_tar(bundles["b"], usb / "model-b.tar")
    with pytest.raises(ArchiveError) as err:
        store.install(usb)
    assert str(err.value) == (f"{usb} holds several bundles (model-a.tar, model-b.tar); give the path of the one to "
                              "install.")


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_a_tar_made_with_the_tar_command_installs(store, bundles, tmp_path):
    tar = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(bundles["a"].parent), "model-a"], check=True)
    assert store.install(tar).model_id == "model-a"
    flat = tmp_path / "flat.tar"
    subprocess.run(["tar", "-cf", str(flat), "-C", str(bundles["b"]), "."], check=True)  # ./model.json ...
    assert store.install(flat).model_id == "model-b"


def test_activate_rollback_and_remove(store, bundles):
    store.install(bundles["a"])
    store.install(bundles["b"])
    assert read_active(store.folder).previous == "model-a"
    p = store.rollback()
    assert (p.active, p.previous, p.reason) == ("model-a", "model-b", "rollback")
    p = store.activate(DEFAULT_ID)
    assert (p.active, p.previous) == (DEFAULT_ID, "model-a")
    with pytest.raises(ModelError, match=f"{DEFAULT_ID} is the active model; activate or roll back"):
        store.remove(DEFAULT_ID)
    store.remove("model-a")  # the rollback target: removing it clears rollback
    assert read_active(store.folder).previous is None and "model-a" not in entries(store)
    with pytest.raises(ModelError, match="There is no previous model to roll back to"):
        store.rollback()
    with pytest.raises(ModelError, match="No model model-z is installed on this unit"):
        store.activate("model-z")
    listed = {m.id: m for m in store.list()}
    assert listed[DEFAULT_ID].active and listed["model-b"].signature.trusted and not listed["model-b"].active
    assert {"model_rolled_back", "model_removed", "model_rollback_target_cleared",
            "model_remove_refused"} <= set(actions(store))


def test_the_same_bundle_again_is_reactivated_and_a_different_one_with_its_id_refused(store, bundles, tmp_path,
                                                                                     test_key):
    store.install(bundles["a"])
    store.install(bundles["b"])
    again = store.install(bundles["a"])
    assert again.already_installed and read_active(store.folder).active == "model-a"
    other = signed_copy(STORE_TEST_BUNDLE, tmp_path / "other", test_key, new_id="model-a",
                        card_edit=lambda c: c.update(decision_threshold=0.42))
    with pytest.raises(ModelError, match="A different bundle with the id model-a is installed already"):
        store.install(other)


def _unchanged(store, before: set[str], active: str | None) -> None:
    assert entries(store) == before, "nothing half-installed, no staging left"
    assert (read_active(store.folder).active if active else read_active(store.folder)) == active
    assert actions(store)[-1] == "model_install_refused"


def test_a_tampered_bundle_is_refused_and_nothing_changes(store, bundles):
    store.install(bundles["a"])
    before = entries(store)
    data = bytearray((bundles["b"] / "model.tflite").read_bytes())
    data[1000] ^= 0x20
    (bundles["b"] / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"model\.tflite does not match its signature"):
        store.install(bundles["b"])
    _unchanged(store, before, "model-a")


def test_a_tampered_tar_is_refused(store, bundles, tmp_path):
    store.install(bundles["a"])
    before = entries(store)
    tar = write_bundle_tar(bundles["b"], tmp_path / "b.tar")
    data = bytearray(tar.read_bytes())
    at = data.index(b"TFL3")  # inside model.tflite's data
    data[at + 40] ^= 0x01
    tar.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="does not match its signature"):
        store.install(tar)
    _unchanged(store, before, "model-a")


@pytest.mark.parametrize("cut", ["first-file", "last-header", "last-file"])
def test_a_truncated_tar_is_refused(store, bundles, tmp_path, cut):
    store.install(bundles["a"])
    before = entries(store)
    tar = write_bundle_tar(bundles["b"], tmp_path / "b.tar")
    with tarfile.open(tar) as archive:
        members = archive.getmembers()
    at = {"first-file": members[0].offset_data + members[0].size // 2, "last-header": members[-1].offset + 300,
          "last-file": members[-1].offset_data + members[-1].size // 2}[cut]
    tar.write_bytes(tar.read_bytes()[:at])
    with pytest.raises(ArchiveError, match=r"is truncated|is not a readable tar file|holds no files") as err:
        store.install(tar)
    assert str(err.value).endswith("copy it again.")
    _unchanged(store, before, "model-a")


def _hostile_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name, kind=tarfile.REGTYPE, size=0, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize(("members", "expected"), [
    ([(_info("/etc/cron.d/x", size=1), b"x")], "contains the unsafe name '/etc/cron.d/x'"),
    ([(_info("b/../../x", size=1), b"x")], "contains the unsafe name 'b/../../x'"),
    ([(_info("b/model.json", tarfile.SYMTYPE, link="/etc/passwd"), None)], "contains the link 'b/model.json'"),
    ([(_info("b/model.json", tarfile.LNKTYPE, link="b/x"), None)], "contains the link 'b/model.json'"),
    ([(_info("b/dev", tarfile.CHRTYPE), None)], "contains the special file 'b/dev'"),
    ([(_info("b/fifo", tarfile.FIFOTYPE), None)], "contains the special file 'b/fifo'"),
    ([(_info("b/sub/x", size=1), b"x")], "in a sub-folder; bundles are flat"),
    ([(_info(f"b/f{i}", size=1), b"x") for i in range(70)], "holds more than 64 files"),
    ([(_info("b/x", size=1), b"x"), (_info("b/x", size=1), b"y")], "lists 'x' twice"),
    ([(_info("a/x", size=1), b"x"), (_info("b/y", size=1), b"y")], "holds more than one folder"),
])
def test_unsafe_tars_are_refused_before_anything_is_written(store, tmp_path, members, expected):
    tar = _hostile_tar(tmp_path / "hostile.tar", members)
    with pytest.raises(ArchiveError, match=expected.replace("(", r"\(")):
        store.install(tar)
    assert not (tmp_path / "etc").exists() and not any(p.name.startswith(".staging") for p in store.folder.iterdir())


def test_a_huge_member_is_refused_before_its_data_is_read(store, tmp_path):
    tar = tmp_path / "huge.tar"
    header = _info("b/model.tflite", size=MAX_BUNDLE_BYTES + 1).tobuf(tarfile.PAX_FORMAT)
    tar.write_bytes(header + b"\0" * 4096)  # the header claims 512 MiB; the file is 5 kB
    with pytest.raises(ArchiveError, match="is larger than 512 MiB"):
        store.install(tar)


def test_a_full_disk_while_copying_leaves_the_old_model_and_no_staging(store, bundles, monkeypatch):
    store.install(bundles["a"])
    before = entries(store)
    calls = {"n": 0}
    real = __import__("device.model.archive", fromlist=["_write_all"])._write_all

    def fill_up(fd, data):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr("device.model.archive._write_all", fill_up)
    with pytest.raises(ModelError) as err:
        store.install(bundles["b"])
    assert str(err.value) == (f"The unit's disk filled up while installing {bundles['b']}; nothing was changed: free "
                              "space (remove an old model with `python -m device model remove ID`) and try again.")
    _unchanged(store, before, "model-a")


def test_a_full_disk_while_switching_removes_the_new_bundle_again(store, bundles, monkeypatch):
    store.install(bundles["a"])
    before = entries(store)

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("device.model.store.write_active", full)
    with pytest.raises(ModelError, match="The unit's disk filled up while activating model-b; nothing was changed"):
        store.install(bundles["b"])
    _unchanged(store, before, "model-a")


def test_too_little_free_space_is_said_before_copying(store, bundles, monkeypatch):
    usage = shutil.disk_usage(store.folder)
    monkeypatch.setattr("device.model.store.shutil.disk_usage", lambda _: usage._replace(free=5 << 20))
    with pytest.raises(ModelError, match=r"The unit has 5 MiB free but the model needs 1\d MiB; remove an old model"):
        store.install(bundles["a"])
    assert read_active(store.folder) is None


def test_a_bundle_for_another_unit_version_is_not_installed(store, tmp_path, test_key):
    store.install(signed_copy(STORE_TEST_BUNDLE, tmp_path / "a", test_key, new_id="model-a"))
    before = entries(store)
    future = signed_copy(STORE_TEST_BUNDLE, tmp_path / "f", test_key, new_id="model-f",
                         card_edit=lambda c: c.update(compatible_units=">=3.0"))
    with pytest.raises(ModelError, match=r"is made for unit software >=3.0 .* update the unit software"):
        store.install(future)
    _unchanged(store, before, "model-a")


def test_one_model_command_at_a_time(store, bundles):
    with store.locked(), pytest.raises(ModelError, match="Another model command is running on this unit"):
        store.install(bundles["a"])
    assert store.install(bundles["a"]).model_id == "model-a"


def test_stale_staging_from_a_killed_install_is_swept_on_the_next_start(store, bundles):
    stale = store.folder / ".staging-999-deadbeef"
    stale.mkdir()
    (stale / "model.tflite").write_bytes(b"half")
    (store.folder / ".ACTIVE.999.tmp").write_bytes(b"{")
    (store.folder / ".removing-old-1234abcd").mkdir()
    assert sorted(store.try_recover()) == [".ACTIVE.999.tmp", ".removing-old-1234abcd", ".staging-999-deadbeef"]
    assert entries(store) == {".lock"} and actions(store) == ["model_store_recovered"]


def test_a_damaged_pointer_says_how_to_repair_it(store, bundles, unit):
    store.install(bundles["a"])
    (store.folder / ACTIVE_FILE).write_text("{not json")
    with pytest.raises(ModelError) as err:
        bundle_folder(unit.model)
    assert str(err.value) == (f"The active-model pointer {store.folder / ACTIVE_FILE} is damaged; choose the model "
                              "again with `python -m device model activate ID` (`model list` shows the ids).")
    store.activate("model-a")
    assert read_active(store.folder).active == "model-a"


def test_an_installed_bundle_tampered_on_the_unit_is_not_activated(store, bundles):
    store.install(bundles["a"])
    store.install(bundles["b"])
    (store.folder / "model-a" / "parity_report.md").write_text("edited on the unit")
    with pytest.raises(SignatureError, match=r"parity_report\.md does not match its signature"):
        store.rollback()
    assert read_active(store.folder).active == "model-b"
    assert actions(store)[-1] == "model_rollback_refused"


def test_a_config_without_a_store_cannot_install(unit):
    with pytest.raises(ModelError, match=r"has no model store; add `store = .*` to its \[model\] section"):
        ModelStore(unit.model.model_copy(update={"store": None}))


def test_the_pointer_is_replaced_not_rewritten(store, bundles):
    store.install(bundles["a"])
    inode = os.stat(store.folder / ACTIVE_FILE).st_ino
    write_active(store.folder, ActivePointer(active="model-a", previous=None))
    assert os.stat(store.folder / ACTIVE_FILE).st_ino != inode  # a new file renamed over the old one
    assert not [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]
    assert (store.folder / "model-a" / SIGNATURE_FILE).is_file()
