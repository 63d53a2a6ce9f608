"""Who may open the console: salted password hashes (Argon2id, argon2-cffi) and server-side login sessions.

The credentials file maps user names to Argon2id hashes (salt and parameters inside each hash string); it is
written atomically with mode 0600 in a 0700 folder. A login creates a random token kept in this process only
(the browser holds it in a signed, HttpOnly, SameSite=Strict cookie); it expires after ``idle`` seconds without a
request or ``max_age`` seconds after login, and logging out or restarting the console ends it.

    creds = Credentials.for_records("demo_output/records")
    creds.set_password("nurse", "correct horse")          # console-password command
    creds.verify("nurse", "correct horse")               # True
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from device.atomic import read_regular, write_atomic
from device.errors import ConfigError, not_saved_message

CREDENTIALS_FILE = Path("console") / "credentials.json"  # under the records folder unless the config names one
MIN_PASSWORD = 6  # characters; with the login rate limits a 6-digit PIN takes years to guess online
MAX_PASSWORD = 256
USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# argon2-cffi's defaults are RFC 9106's low-memory profile (Argon2id, t=3, 64 MiB, p=4): ~0.3 s on a Pi 4.
HASHER = PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked when the user is unknown, so that answer takes as long as a real check (names do not leak)."""
    return HASHER.hash(secrets.token_hex(16))


class Credentials:
    """The console's users and their password hashes, in one JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_records(cls, records: str | Path, path: str | Path | None = None) -> Credentials:
        """The credentials file a config names, else ``<records>/console/credentials.json``."""
        return cls(Path(path) if path else Path(records) / CREDENTIALS_FILE)

    def users(self) -> dict[str, str]:
        """User name -> hash ({} when the file does not exist yet).

        Raises:
            ConfigError: the file exists but is not a credentials file.
        """
        try:
            data = json.loads(read_regular(self.path, 1 << 20).decode("utf-8"))
            users = data["users"]
            if not isinstance(users, dict) or not all(isinstance(h, str) for h in users.values()):
                raise TypeError
            return users
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"The console credentials file {self.path} is damaged: delete it and set the "
                              "password again with `python -m device console-password`.") from None

    def set_password(self, user: str, password: str) -> None:
        """Add a user or change a password (salted Argon2id hash; the file is written 0600).

        Raises:
            ConfigError: the name or the password is not acceptable (one sentence saying why).
        """
        if not USER_PATTERN.match(user):
            raise ConfigError("A console user name is 1-32 letters, digits, '.', '_' or '-', starting with a "
                              "letter or digit; choose another.")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise ConfigError(f"The console PIN or password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters; "
                              "choose a longer one.")
        users = {**self.users(), user: HASHER.hash(password)}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o077)  # the temporary file is created 0600, so the hash is never readable by others
        try:
            write_atomic(self.path, json.dumps({"version": 1, "users": users}, indent=1).encode())
        except OSError as exc:  # a full or read-only disk: one sentence, the old file is untouched
            raise ConfigError(not_saved_message(exc, "the console password", "run the command again")) from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s; takes the same time for unknown users."""
        stored = self.users().get(user)
        try:
            return HASHER.verify(stored or _dummy_hash(), password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False


@dataclass
class _Login:
    user: str
    started: float
    seen: float


class Sessions:
    """Logged-in browsers: random tokens held in memory, with an idle and an absolute expiry (seconds)."""

    def __init__(self, idle: float, max_age: float, clock=time.monotonic) -> None:
        self.idle, self.max_age, self.clock = idle, max_age, clock
        self._logins: dict[str, _Login] = {}
        self._lock = threading.Lock()

    def start(self, user: str) -> str:
        """Log ``user`` in; returns the new token (any older expired logins are forgotten)."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._logins = {t: s for t, s in self._logins.items() if self._alive(s, now)}
            self._logins[token] = _Login(user, now, now)
        return token

    def _alive(self, login: _Login, now: float) -> bool:
        return now - login.seen <= self.idle and now - login.started <= self.max_age

    def user(self, token: str | None) -> str | None:
        """The user of a live token (and keep it alive), or None when unknown or expired."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            login = self._logins.get(token)
            if login is None:
                return None
            if not self._alive(login, now):
                del self._logins[token]
                return None
            login.seen = now
            return login.user

    def end(self, token: str | None) -> None:
        """Log out (unknown tokens are ignored)."""
        with self._lock:
            self._logins.pop(token or "", None)
