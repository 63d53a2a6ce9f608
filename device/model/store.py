"""The unit's installed models: install (folder, ``.tar``, USB stick), activate, roll back, remove — atomically.

A store is the folder named by the config's ``[model] store``::

    <store>/ACTIVE                   which model runs, and which one rollback returns to (device.model.active)
    <store>/<id>/                    installed bundles, each with its signature.json
    <store>/.staging-<pid>-<hex>/    an install in progress: swept by the next model command or kiosk start
    <store>/.removing-<id>-<hex>/    a removal in progress: swept likewise
    <store>/.lock                    flock: one model command at a time (released by the kernel if one is killed)

Install: lock, sweep, find the source, check free space, stage (copy or safe extraction, fsync), check the
signature, the unit version, the card, the sha256 and the self-test on this unit's runtime, rename the staging
folder to ``<id>`` (fsync of the store), then replace ``ACTIVE`` (fsync). A kill at any moment leaves ``ACTIVE``
naming the old or the new model, each complete; a failure leaves the store as it was. The first install also
copies the bundled default model into the store, so there is something to roll back to. Every step goes to the
audit trail through the ``audit`` callable.

    store = ModelStore(cfg.model, audit=lambda action, detail, model_id: records.audit("admin", action, detail,
                                                                                         model_id))
    store.install("/media/usb/new-model.tar"); store.rollback(); store.list()
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from device.atomic import TMP_SUFFIX, fsync_dir
from device.errors import ModelError
from device.model.active import ACTIVE_FILE, ActivePointer, read_active, write_active
from device.model.archive import find_bundle_source, source_size, stage_bundle
from device.model.bundle import BundleModelConfig, ModelBundle, default_model_dir, open_checked_bundle, read_card
from device.model.card import ModelCard
from device.model.signature import SIGNATURE_FILE, SignatureCheck, check_signature

STAGING_PREFIX = ".staging-"
REMOVING_PREFIX = ".removing-"
LOCK_FILE = ".lock"
RESERVED_IDS = {ACTIVE_FILE.lower()}
FREE_MARGIN_BYTES = 16 << 20  # kept free beyond the bundle: SQLite's audit entries and the pointer still fit
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)
LIST_HINT = "`python -m device model list` shows the installed ones"

AuditFn = Callable[[str, dict, str | None], None]  # (action, detail, model id)


@dataclass(frozen=True)
class InstalledModel:
    """One bundle in the store, as ``model list`` shows it."""

    id: str
    folder: Path
    active: bool
    previous: bool
    size: int
    card: ModelCard | None
    signature: SignatureCheck | None
    problem: str | None


@dataclass(frozen=True)
class InstallResult:
    """What an install did."""

    model_id: str
    previous: str | None
    already_installed: bool
    seeded_default: str | None


class ModelStore:
    """The installed models of one unit (see the module docstring)."""

    def __init__(self, cfg: BundleModelConfig, audit: AuditFn | None = None) -> None:
        if not cfg.store:
            raise ModelError("This unit's config has no model store; add `store = \"/var/lib/dr-unit/models\"` to "
                             "its [model] section to install models.")
        self.cfg = cfg
        self.folder = Path(cfg.store)
        self._audit = audit or (lambda action, detail, model_id: None)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(f"The model store {self.folder} cannot be created ({exc.strerror}); check the disk and "
                             "its permissions.") from None

    # -- locking and recovery ---------------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (one model command at a time), or refuse at once when another holds it."""
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ModelError(f"Another model command is running on this unit (lock {self.folder / LOCK_FILE}); wait "
                             "for it to finish and try again.") from None
        try:
            yield
        finally:
            os.close(fd)

    def recover(self) -> list[str]:
        """Remove what an interrupted install or removal left behind (call with the lock held).

        Returns:
            The names removed (also written to the audit trail when any).
        """
        removed = []
        for entry in os.scandir(self.folder):
            if entry.name.startswith((STAGING_PREFIX, REMOVING_PREFIX)) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
            elif entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(entry.name)
        if removed:
            fsync_dir(self.folder)
            self._audit("model_store_recovered", {"removed": removed}, None)
        return removed

    def try_recover(self) -> list[str]:
        """:meth:`recover` unless a model command holds the lock right now (the kiosk calls this at start)."""
        try:
            with self.locked():
                return self.recover()
        except ModelError:
            return []

    # -- reading ----------------------------------------------------------------------------------------------------
    def pointer(self) -> ActivePointer | None:
        """The ``ACTIVE`` pointer, or None when nothing was activated (the bundled default runs)."""
        return read_active(self.folder)

    def _replaceable_pointer(self) -> ActivePointer | None:
        """The pointer before an install or activation replaces it: a damaged one is audited and replaced."""
        try:
            return self.pointer()
        except ModelError as exc:
            self._audit("model_pointer_damaged", {"reason": str(exc)}, None)
            return None

    def list(self) -> list[InstalledModel]:
        """Every installed bundle with its card and signature status (no self-test: that needs the runtime)."""
        pointer = self.pointer()
        out = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            folder = Path(entry.path)
            card = signature = problem = None
            try:
                signature = check_signature(folder, self.cfg.trusted_keys, allow_unsigned=True)
                card = read_card(folder)
                problem = None if signature.trusted else signature.problem
            except ModelError as exc:
                problem = str(exc)
            size = sum(e.stat().st_size for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
            out.append(InstalledModel(entry.name, folder, bool(pointer and pointer.active == entry.name),
                                      bool(pointer and pointer.previous == entry.name), size, card, signature,
                                      problem))
        return out

    # -- checks -----------------------------------------------------------------------------------------------------
    def _check(self, folder: Path) -> ModelBundle:
        """Signature, unit version, card, sha256 and self-test of a bundle folder, audited."""
        bundle = open_checked_bundle(folder, self.cfg.model_copy(update={"run_selftest": False}))
        model_id = bundle.card.id
        self._audit("model_verified", {"folder": str(folder), "signature": bundle.signature.audit_detail(),
                                       "sha256": bundle.card.sha256}, model_id)
        if not bundle.signature.trusted:
            self._audit("model_signature_override", bundle.signature.audit_detail(), model_id)
        figures = bundle.selftest()
        self._audit("model_selftest_passed", figures, model_id)
        return bundle

    def _check_space(self, source: Path) -> None:
        need = source_size(source) + FREE_MARGIN_BYTES
        free = shutil.disk_usage(self.folder).free
        if free < need:
            raise ModelError(f"The unit has {free >> 20} MiB free but the model needs {need >> 20} MiB; remove an old "
                             f"model (`python -m device model remove ID`) or free space, then install again.")

    # -- changing ---------------------------------------------------------------------------------------------------
    def _stage_and_place(self, source: Path) -> tuple[str, bool]:
        """Stage, check and rename one bundle into the store. Returns (id, whether it was already installed)."""
        self._check_space(source)
        staging = self.folder / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            stage_bundle(source, staging)
            fsync_dir(staging)
            model_id = self._check(staging).card.id
            if model_id.lower() in RESERVED_IDS:
                raise ModelError(f"The bundle id {model_id} is reserved on the unit; export it under another id.")
            final = self.folder / model_id
            if final.exists():
                same = (final / SIGNATURE_FILE).is_file() and \
                    (final / SIGNATURE_FILE).read_bytes() == (staging / SIGNATURE_FILE).read_bytes()
                if not same:
                    raise ModelError(f"A different bundle with the id {model_id} is installed already; remove it "
                                     f"(`python -m device model remove {model_id}`) or export the new one under "
                                     "another id.")
                return model_id, True
            os.rename(staging, final)
            fsync_dir(self.folder)
            self._audit("model_installed", {"source": str(source), "folder": str(final)}, model_id)
            return model_id, False
        except OSError as exc:
            raise _disk_error(exc, f"installing {source}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _seed_default(self) -> str | None:
        """Copy the bundled default model into a store that has no pointer yet (the first rollback target)."""
        try:
            default = default_model_dir()
            model_id, _ = self._stage_and_place(default)
            return model_id
        except ModelError as exc:
            self._audit("model_default_not_kept", {"reason": str(exc)}, None)
            return None

    def _switch(self, pointer: ActivePointer, action: str = "model_activated") -> ActivePointer:
        """Replace ACTIVE (atomic: the old or the new pointer survives any crash) and audit it."""
        try:
            write_active(self.folder, pointer)
        except OSError as exc:
            raise _disk_error(exc, f"activating {pointer.active}") from None
        self._audit(action, {"previous": pointer.previous, "reason": pointer.reason}, pointer.active)
        return pointer

    def install(self, source: str | Path) -> InstallResult:
        """Install a bundle (folder, ``.tar``, or a folder such as a USB stick holding one) and make it active.

        Raises:
            ModelError: any check fails, the disk fills up, or another model command runs (one sentence; the
                store is left as it was, and the refusal is in the audit trail).
        """
        source = Path(source).absolute()
        with self.locked():
            self.recover()
            self._audit("model_install_started", {"source": str(source)}, None)
            try:
                found = find_bundle_source(source)
                pointer = self._replaceable_pointer()
                seeded = self._seed_default() if pointer is None else None
                model_id, already = self._stage_and_place(found)
                if pointer is not None and pointer.active == model_id:
                    return InstallResult(model_id, pointer.previous, True, None)
                previous = pointer.active if pointer is not None else seeded
                previous = None if previous == model_id else previous
                try:
                    self._switch(ActivePointer(active=model_id, previous=previous, reason="install"))
                except ModelError:
                    if not already:  # nothing half-installed: a bundle that could not be activated goes again
                        try:
                            self._discard(model_id)
                        except OSError:
                            pass  # renamed or not, it is inactive; a later sweep or `model remove` deletes it
                    raise
                return InstallResult(model_id, previous, already, seeded)
            except ModelError as exc:
                self._audit("model_install_refused", {"source": str(source), "reason": str(exc)}, None)
                raise

    def _installed_folder(self, model_id: str) -> Path:
        folder = self.folder / model_id
        if model_id.startswith(".") or "/" in model_id or "\\" in model_id or folder.is_symlink() or \
                not folder.is_dir():
            raise ModelError(f"No model {model_id} is installed on this unit; {LIST_HINT}.")
        return folder

    def activate(self, model_id: str, reason: str = "activate") -> ActivePointer:
        """Check an installed bundle again (signature, card, self-test) and make it active; the old one becomes
        the rollback target."""
        with self.locked():
            self.recover()
            try:
                folder = self._installed_folder(model_id)
                pointer = self._replaceable_pointer()
                if pointer is not None and pointer.active == model_id:
                    return pointer
                self._check(folder)
                previous = pointer.active if pointer is not None else self._seed_default()
                return self._switch(ActivePointer(active=model_id, previous=previous, reason=reason))
            except ModelError as exc:
                self._audit("model_activate_refused", {"reason": str(exc)}, model_id)
                raise

    def rollback(self) -> ActivePointer:
        """Make the previous model active again (after checking it); the current one becomes the previous."""
        with self.locked():
            self.recover()
            try:
                pointer = self.pointer()
                if pointer is None or pointer.previous is None:
                    raise ModelError("There is no previous model to roll back to on this unit; install or activate "
                                     f"another one ({LIST_HINT}).")
                folder = self.folder / pointer.previous
                if not folder.is_dir():
                    raise ModelError(f"The previous model {pointer.previous} is no longer installed; activate another "
                                     f"one ({LIST_HINT}).")
                self._check(folder)
                return self._switch(ActivePointer(active=pointer.previous, previous=pointer.active,
                                                  reason="rollback"), "model_rolled_back")
            except ModelError as exc:
                self._audit("model_rollback_refused", {"reason": str(exc)}, None)
                raise

    def _discard(self, model_id: str) -> None:
        """Rename a bundle out of the way (atomic), then delete it; an interruption is swept later."""
        doomed = self.folder / f"{REMOVING_PREFIX}{model_id}-{uuid.uuid4().hex[:8]}"
        os.rename(self.folder / model_id, doomed)
        fsync_dir(self.folder)
        shutil.rmtree(doomed, ignore_errors=True)

    def remove(self, model_id: str) -> None:
        """Delete an installed bundle that is not active (removing the rollback target clears it)."""
        with self.locked():
            self.recover()
            try:
                pointer = self.pointer()
                self._installed_folder(model_id)
                if pointer is not None and pointer.active == model_id:
                    raise ModelError(f"{model_id} is the active model; activate or roll back to another one before "
                                     "removing it.")
                if pointer is not None and pointer.previous == model_id:
                    self._switch(ActivePointer(active=pointer.active, previous=None, reason="remove"),
                                 "model_rollback_target_cleared")
                try:
                    self._discard(model_id)
                except OSError as exc:
                    raise _disk_error(exc, f"removing {model_id}") from None
            except ModelError as exc:
                self._audit("model_remove_refused", {"reason": str(exc)}, model_id)
                raise
            self._audit("model_removed", {}, model_id)


def _disk_error(exc: OSError, doing: str) -> ModelError:
    if exc.errno in DISK_ERRORS:
        return ModelError(f"The unit's disk filled up while {doing}; nothing was changed: free space (remove an old "
                          "model with `python -m device model remove ID`) and try again.")
    return ModelError(f"The unit's disk failed while {doing} ({exc.strerror}); nothing was changed: check the storage "
                      "card and try again.")
