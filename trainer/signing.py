"""Signing keys and bundle signatures: the body of ``trainer keygen``, ``trainer sign`` and ``export --sign``.

A key is an Ed25519 private key in a PEM file (PKCS#8, optionally encrypted with a passphrase, mode 0600) plus its
public half beside it (``<key>.pub``, TOML with ``name``, ``public_key`` and ``key_id``: the lines a unit's config
needs). The private key never goes into a repository or onto a unit (docs/model_updates.md, "Keys").

    info = generate_key("/work/keys/project_ed25519.pem", name="dr-cam-project-2026")
    key = load_signing_key(info.path)                  # passphrase from DR_KEY_PASSPHRASE or the argument
    sign_bundle_folder("models/x-int8", key)           # checks the bundle like the unit, then signs it
"""

from __future__ import annotations

import base64
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from device.atomic import write_private
from device.errors import ScreeningError
from device.model.archive import write_bundle_tar
from device.model.bundle import load_bundle
from device.model.signature import TrustedKey, key_id_of, raw_public_key, sign_bundle, verify_bundle

PASSPHRASE_ENV = "DR_KEY_PASSPHRASE"  # read instead of a prompt (CI, scripts); never logged
PUBLIC_SUFFIX = ".pub"
PRIVATE_MODE = 0o600


class SigningError(ScreeningError):
    """A key cannot be made, read or used (one sentence saying what to do)."""


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key with its name and public half."""

    private_key: object  # cryptography Ed25519PrivateKey
    name: str
    public_key: str  # base64 of the 32 raw bytes
    key_id: str
    path: Path

    @property
    def trusted(self) -> TrustedKey:
        """The config entry a unit needs to accept this key's signatures."""
        return TrustedKey(name=self.name, public_key=self.public_key)


def _serialization():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return serialization, Ed25519PrivateKey


def public_key_file(key_path: str | Path) -> Path:
    """Where the public half of a key file lives (``<key>.pub``)."""
    key_path = Path(key_path)
    return key_path.with_name(key_path.name + PUBLIC_SUFFIX)


def _public_text(name: str, public_b64: str, key_id: str) -> str:
    return ("# Public half of a dr-cam bundle signing key. A unit trusts it with, in its config:\n"
            "#   [model]\n"
            f'#   trusted_keys = [{{ name = "{name}", public_key = "{public_b64}" }}]\n'
            f'name = "{name}"\npublic_key = "{public_b64}"\nkey_id = "{key_id}"\n')


def generate_key(path: str | Path, name: str, passphrase: bytes | None = None) -> SigningKey:
    """Make a new Ed25519 key: ``path`` (private, PEM, mode 0600, encrypted when a passphrase is given) and
    ``path.pub`` (public, TOML). Refuses to overwrite either.

    Args:
        path: the private key file to create (its folder is created with mode 0700).
        name: who holds the key, e.g. ``"dr-cam-project-2026"`` (shown by units in messages).
        passphrase: encrypt the PEM with it (best available encryption of ``cryptography``).

    Returns:
        The new :class:`SigningKey`.
    """
    serialization, private_type = _serialization()
    path = Path(path)
    pub = public_key_file(path)
    for target in (path, pub):
        if target.exists():
            raise SigningError(f"{target} already exists; choose another file name (a key is never overwritten).")
    if not 1 <= len(name) <= 64 or '"' in name or "\\" in name:
        raise SigningError(f"The key name {name!r} must be 1-64 characters without quotes; choose another.")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = private_type.generate()
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(path, pem, PRIVATE_MODE)
    raw = raw_public_key(key)
    public_b64 = base64.b64encode(raw).decode()
    pub.write_text(_public_text(name, public_b64, key_id_of(raw)), encoding="utf-8")
    return SigningKey(key, name, public_b64, key_id_of(raw), path)


def _key_name(path: Path, name: str | None) -> str:
    if name:
        return name
    pub = public_key_file(path)
    if pub.is_file():
        try:
            return str(tomllib.loads(pub.read_text(encoding="utf-8"))["name"])
        except (OSError, ValueError, KeyError):
            pass
    return path.stem


def load_signing_key(path: str | Path, passphrase: bytes | None = None, name: str | None = None) -> SigningKey:
    """Read a private key written by :func:`generate_key` (or any Ed25519 PKCS#8 PEM).

    Args:
        path: the PEM file; it must not be readable by other users (like ssh, a key others can read is refused).
        passphrase: for an encrypted key (default: the ``DR_KEY_PASSPHRASE`` environment variable).
        name: the key's name in signatures (default: from ``<key>.pub``, else the file name).

    Raises:
        SigningError: missing, readable by others, wrong passphrase, or not an Ed25519 key.
    """
    serialization, private_type = _serialization()
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"The signing key {path} cannot be read ({exc.strerror}); check the path.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"The signing key {path} is readable by other users (mode {stat.S_IMODE(mode):o}); run "
                           f"`chmod 600 {path}` and check who copied it.")
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as exc:
        if "not encrypted" in str(exc):  # a passphrase was given for a plain key: use it anyway
            key = serialization.load_pem_private_key(data, None)
        else:
            raise SigningError(f"The signing key {path} is protected by a passphrase; type it when asked or set "
                               f"{PASSPHRASE_ENV}.") from None
    except ValueError:
        raise SigningError(f"The signing key {path} cannot be opened (wrong passphrase, or not a PEM private key); "
                           "check the passphrase and the file.") from None
    if not isinstance(key, private_type):
        raise SigningError(f"The key {path} is not an Ed25519 key; make one with `python -m trainer keygen`.")
    raw = raw_public_key(key)
    return SigningKey(key, _key_name(path, name), base64.b64encode(raw).decode(), key_id_of(raw), path)


def key_is_encrypted(path: str | Path) -> bool:
    """True when the PEM file holds an encrypted private key (so the CLI knows to ask for the passphrase)."""
    try:
        return b"ENCRYPTED PRIVATE KEY" in Path(path).read_bytes()[:200]
    except OSError:
        return False


def sign_bundle_folder(folder: str | Path, key: SigningKey, tar: str | Path | None = None,
                       check: bool = True) -> Path:
    """Sign an existing bundle, after checking it as the unit does (card, sha256, tensors, self-test).

    Args:
        folder: the bundle folder; its ``signature.json`` is written (replaced).
        key: from :func:`load_signing_key`.
        tar: also write the signed bundle as this ``.tar`` (for a USB stick: ``python -m device model install``).
        check: run the unit's checks first (the export has just run them itself).

    Returns:
        The ``signature.json`` path.

    Raises:
        ModelError: the bundle fails the unit's checks (it is not signed).
    """
    folder = Path(folder)
    if check:
        load_bundle(folder, run_selftest=True)
    path = sign_bundle(folder, key.private_key, key.name)
    verify_bundle(folder, [key.trusted])  # round trip through the unit's own verification
    if tar is not None:
        write_bundle_tar(folder, tar)
    return path
