"""Bundle signatures: one Ed25519 signature over a manifest of every file of a model bundle.

``trainer export --sign KEY`` and ``trainer sign BUNDLE --key KEY`` write ``signature.json`` beside ``model.json``;
the unit verifies it against the public keys its config trusts (``[model] trusted_keys``) before it installs or
loads a bundle. The signature covers the sha256 and size of every file in the bundle folder (the card, the model,
the self-test set, the parity report), so one changed byte anywhere — even with the card's hashes updated — breaks
it, and a file added to the folder is refused as not covered. Verification needs only ``cryptography`` (no
TensorFlow; Debian/Raspberry Pi OS: ``python3-cryptography``).

``signature.json``::

    {"format": "dr-cam-bundle-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "<16 hex: sha256 of the raw public key>", "key_name": "dr-cam-project-2026",
     "signed_at": "2026-12-01T10:00:00Z",
     "manifest": {"bundle_id": "<card id>", "files": {"model.json": {"sha256": "<hex>", "size": 2810}, ...}},
     "signature": "<base64 of the 64-byte Ed25519 signature>"}

The signed bytes are ``SIGNED_PREFIX`` + the canonical JSON (sorted keys, no spaces, ASCII) of every field except
``signature``, re-serialised from the parsed values, so the file's own formatting does not matter.

    check = check_signature(folder, trusted_keys, allow_unsigned=False)   # SignatureError (one sentence) if bad
    sign_bundle(folder, private_key, "my-key")                           # cryptography Ed25519PrivateKey
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.config import first_error_sentence
from device.atomic import read_regular, sha256_file, write_atomic
from device.errors import ModelError
from device.model.card import CARD_FILE

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = "dr-cam-bundle-signature"
SIGNED_PREFIX = b"dr-cam-bundle-signature/1\n"  # domain separation: these bytes are never valid as anything else
KEY_ID_HEX = 16  # 64 bits of sha256(public key): names a key in messages and configs, never trusted on its own
MAX_FILES = 64  # a bundle has 6 files; more is a mistake or an attack
MAX_SIGNATURE_BYTES = 1 << 20
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
INSTALL_HINT = ("install it with `pip install 'dr-cam-screening[unit]'` (or `apt install python3-cryptography` on "
                "Raspberry Pi OS)")
SIGN_HINT = "install a bundle signed with a trusted key (`python -m trainer sign BUNDLE --key KEY`)"

# The project's public key (private half: offline, with the maintainer; docs/model_updates.md "Keys"). The default
# config trusts it and the committed bundles in models/ are signed with it. Rotation: add the new key here, re-sign
# the bundles, release; remove the old key in the release after.
PROJECT_KEY_NAME = "dr-cam-project-2026"
PROJECT_PUBLIC_KEY = "poFHbQnRACa2zOs8UW3MgVkoNjzCbqZdBkm/muERd5A="  # key id f876c5cbe046d72f
# The second project key (2026-12-02): the first one's private half was lost with the ephemeral machine it lived
# on (lost, not leaked), so both are trusted for one release; bundles signed from now on use this one
# (docs/model_updates.md, "Rotating a key").
PROJECT_KEY_NAME_B = "dr-cam-project-2026b"
PROJECT_PUBLIC_KEY_B = "pWwbIe9thfaQ6aI/QVbLxfiDi9/Tw+d/KqEc1WEZPKE="  # key id bf9f6482450b6481
# The third (2026-12-04): the second one's private half went the same way (lost with its machine, not leaked);
# bundles signed from 2026-12-04 on use this one, the older two stay trusted so that their bundles keep loading.
PROJECT_KEY_NAME_C = "dr-cam-project-2026c"
PROJECT_PUBLIC_KEY_C = "l8xkyhO3v65Qtbv6uDJR4qYHtH8B+7yjG5x6AipfAuE="  # key id 5e3d0ef060250ead


class SignatureError(ModelError):
    """A bundle is unsigned, signed by an untrusted key, or altered after signing."""


class TrustedKey(BaseModel):
    """One public key whose bundle signatures this unit accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64, description="who holds the private key (shown in messages)")
    public_key: str = Field(description="Ed25519 public key: base64 of its 32 raw bytes (`trainer keygen` prints it)")

    @field_validator("public_key")
    @classmethod
    def _raw_32_bytes(cls, text: str) -> str:
        _decode_public_key(text)
        return text.strip()

    @property
    def raw(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return _decode_public_key(self.public_key)

    @property
    def key_id(self) -> str:
        """Short id: the first 16 hex digits of sha256 of the raw key."""
        return key_id_of(self.raw)


def _decode_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (the line `trainer keygen` prints)") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def raw_public_key(private_key) -> bytes:
    """The raw 32 bytes of an Ed25519 private key's public half (``public_bytes_raw()`` needs cryptography 40;
    Raspberry Pi OS Bookworm ships 38)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(raw_public_key: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public_key).hexdigest()[:KEY_ID_HEX]


PROJECT_KEYS = (
    TrustedKey(name=PROJECT_KEY_NAME, public_key=PROJECT_PUBLIC_KEY),
    TrustedKey(name=PROJECT_KEY_NAME_B, public_key=PROJECT_PUBLIC_KEY_B),
    TrustedKey(name=PROJECT_KEY_NAME_C, public_key=PROJECT_PUBLIC_KEY_C),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One signed file: its sha256 and size in bytes."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(_Strict):
    """What is signed: the bundle id and every file of the bundle folder (except signature.json)."""

    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    files: dict[str, FileEntry] = Field(min_length=1, max_length=MAX_FILES)

    @field_validator("files")
    @classmethod
    def _names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if not re.match(FILE_NAME_PATTERN, name) or name == SIGNATURE_FILE:
                raise ValueError(f"'{name}' is not a plain file name of a bundle")
        return files


class SignatureFile(_Strict):
    """``signature.json``."""

    format: Literal["dr-cam-bundle-signature"] = SIGNATURE_FORMAT
    version: Literal[1] = 1
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    key_name: str = Field(min_length=1, max_length=64)
    signed_at: str = Field(min_length=1, max_length=40)
    manifest: Manifest
    signature: str = Field(min_length=1, max_length=200)

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature is over."""
        body = self.model_dump(mode="json", exclude={"signature"})
        return SIGNED_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking a bundle's signature.

    Attributes:
        trusted: True when a trusted key signed exactly these files.
        key_id, key_name, signed_at: from signature.json (empty when unsigned or unreadable).
        problem: why it is not trusted (the sentence the unit would have refused it with), else None.
    """

    trusted: bool
    key_id: str = ""
    key_name: str = ""
    signed_at: str = ""
    problem: str | None = None

    def describe(self) -> str:
        """One line for the self-test, ``model list`` and the audit trail."""
        if self.trusted:
            return f"signed by {self.key_name} (key {self.key_id}) at {self.signed_at}"
        return f"SIGNATURE NOT VERIFIED (development override): {self.problem}"

    def audit_detail(self) -> dict:
        """JSON-able fields for the audit trail."""
        return {"trusted": self.trusted, "key_id": self.key_id, "key_name": self.key_name,
                "signed_at": self.signed_at, "problem": self.problem}


def _crypto():
    """The cryptography primitives (imported on first use: a clear sentence when the package is missing)."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError:
        raise ModelError(f"Bundle signatures cannot be checked: the cryptography package is missing; "
                         f"{INSTALL_HINT}.") from None
    return InvalidSignature, Ed25519PrivateKey, Ed25519PublicKey


def bundle_manifest(folder: str | Path, bundle_id: str) -> Manifest:
    """The manifest of a bundle folder: every regular file in it except ``signature.json``.

    Raises:
        SignatureError: the folder holds a link, a sub-folder or a special file, or too many files.
    """
    folder = Path(folder)
    files: dict[str, FileEntry] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == SIGNATURE_FILE:
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            raise SignatureError(f"The bundle {folder} holds {entry.name}, which is not a plain file (a link, folder "
                                 "or device); remove it before signing.")
        files[entry.name] = FileEntry(sha256=sha256_file(entry.path), size=entry.stat(follow_symlinks=False).st_size)
    try:
        return Manifest(bundle_id=bundle_id, files=files)
    except ValidationError as exc:
        raise SignatureError(first_error_sentence(exc, f"The bundle {folder}", "rename or remove that file",
                                                  whole="files")) from None


def sign_bundle(folder: str | Path, private_key, key_name: str) -> Path:
    """Sign every file of a bundle folder; writes (replaces) ``signature.json`` atomically.

    Args:
        folder: the bundle folder (``model.json`` names its id).
        private_key: a ``cryptography`` ``Ed25519PrivateKey``.
        key_name: who holds the key (kept in the signature, shown by the unit).

    Returns:
        The path of ``signature.json``.
    """
    _, private_type, _ = _crypto()
    if not isinstance(private_key, private_type):
        raise SignatureError("Bundles are signed with Ed25519 keys only; make one with `python -m trainer keygen`.")
    folder = Path(folder)
    bundle_id = _card_id(folder)
    raw = raw_public_key(private_key)
    unsigned = SignatureFile(key_id=key_id_of(raw), key_name=key_name, signature="-",
                             signed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                             manifest=bundle_manifest(folder, bundle_id))
    signature = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode()
    doc = unsigned.model_copy(update={"signature": signature})
    return write_atomic(folder / SIGNATURE_FILE, (doc.model_dump_json(indent=2) + "\n").encode())


def _card_id(folder: Path) -> str:
    try:
        card = json.loads(read_regular(folder / CARD_FILE, 1 << 20).decode("utf-8"))
        return str(card["id"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise SignatureError(f"The bundle {folder} has no readable model card with an id; re-export it.") from None


def read_signature(folder: str | Path) -> SignatureFile:
    """Parse ``signature.json`` of a bundle folder.

    Raises:
        SignatureError: missing, too large, not JSON, or not the signature format (field named).
    """
    path = Path(folder) / SIGNATURE_FILE
    try:
        if path.lstat().st_size > MAX_SIGNATURE_BYTES or not path.is_file() or path.is_symlink():
            raise SignatureError(f"The signature file {path} is not a plain file of at most 1 MiB; {SIGN_HINT}.")
        text = read_regular(path, MAX_SIGNATURE_BYTES).decode("utf-8")  # fstat again: no swap for a FIFO
    except FileNotFoundError:
        raise SignatureError(f"The model bundle {Path(folder)} is not signed (no {SIGNATURE_FILE}); "
                             f"{SIGN_HINT}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"The signature file {path} cannot be read ({exc}); {SIGN_HINT}.") from None
    try:
        return SignatureFile.model_validate_json(text)
    except ValidationError as exc:
        raise SignatureError(first_error_sentence(exc, f"The signature file {path}", SIGN_HINT,
                                                  whole="(file)")) from None


def verify_bundle(folder: str | Path, trusted: tuple[TrustedKey, ...] | list[TrustedKey]) -> SignatureCheck:
    """Check that a trusted key signed exactly the files of a bundle folder.

    Args:
        folder: the bundle folder.
        trusted: the public keys to accept.

    Returns:
        A trusted :class:`SignatureCheck`.

    Raises:
        SignatureError: unsigned, unknown key, bad signature, a file changed, missing or not covered (one sentence
            naming the signature file and key).
    """
    invalid_signature, _, public_type = _crypto()
    folder = Path(folder)
    doc = read_signature(folder)
    where = f"{folder / SIGNATURE_FILE} (key {doc.key_name}, {doc.key_id})"
    key = next((k for k in trusted if k.key_id == doc.key_id), None)
    if key is None:
        raise SignatureError(f"The bundle {folder} is signed with key {doc.key_name} ({doc.key_id}), which this unit "
                             f"does not trust; add its public key to [model] trusted_keys or {SIGN_HINT}.")
    try:
        public_type.from_public_bytes(key.raw).verify(base64.b64decode(doc.signature, validate=True),
                                                      doc.signed_bytes())
    except (invalid_signature, binascii.Error, ValueError):
        raise SignatureError(f"The signature {where} does not match: the bundle was altered after signing; copy "
                             "the original bundle again.") from None
    present = {e.name: e for e in os.scandir(folder) if e.name != SIGNATURE_FILE}
    for name, entry in sorted(doc.manifest.files.items()):
        found = present.pop(name, None)
        if found is None:
            raise SignatureError(f"The file {name} signed in {where} is missing from the bundle; copy the original "
                                 "bundle again.")
        st = found.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size or sha256_file(found.path) != entry.sha256:
            raise SignatureError(f"The file {found.path} does not match its signature {where}: the bundle was "
                                 "altered or damaged; copy the original bundle again.")
    if present:
        name = sorted(present)[0]
        raise SignatureError(f"The file {folder / name} is not covered by the signature {where}; remove it or "
                             "re-sign the bundle.")
    if _card_id(folder) != doc.manifest.bundle_id:
        raise SignatureError(f"The card in {folder} names another bundle than its signature {where}; copy the "
                             "original bundle again.")
    return SignatureCheck(True, doc.key_id, doc.key_name, doc.signed_at)


def check_signature(folder: str | Path, trusted: tuple[TrustedKey, ...] | list[TrustedKey],
                    allow_unsigned: bool = False) -> SignatureCheck:
    """:func:`verify_bundle`, or, with the development override, the reason it failed instead of an error.

    Args:
        folder: the bundle folder.
        trusted: the public keys to accept.
        allow_unsigned: DEVELOPMENT ONLY: accept a bundle whose signature does not verify (the caller audits it).

    Raises:
        SignatureError: the signature does not verify and ``allow_unsigned`` is off.
    """
    try:
        return verify_bundle(folder, trusted)
    except SignatureError as exc:
        if not allow_unsigned:
            raise
        return SignatureCheck(False, problem=str(exc))
