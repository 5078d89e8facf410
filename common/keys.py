"""CurveZMQ keys on disk, the allowlist of peer keys, and the ZAP handler.

Every socket is encrypted with CURVE. A CURVE server without a ZAP handler
admits any client that knows the server key (libzmq #2594), so every server
socket runs pyzmq's asyncio authenticator with a callback that admits only the
keys in its allowlist file (one Z85 public key per line, an optional name
after it, whole-line ``#`` comments). The file is re-read when it changes, so keys can
be added while the server runs.

Keys are made on first start in the node's data directory: ``curve.key`` (the
public key) and ``curve.secret`` (mode 0600, refused if others may read it).
Files are written with ``common.fileio.write_atomic`` (temporary name, fsync,
rename, directory fsync).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth.asyncio

from common.errors import KeyFileError
from common.fileio import check_private_mode, write_atomic
from common.protocol import MAX_FRAME

__all__ = [
    "Allowlist",
    "KeyPair",
    "load_or_create_keypair",
    "read_public_key",
    "resolve_public_key",
    "save_keypair",
    "secure_client",
    "secure_server",
    "start_authenticator",
    "write_atomic",
]

log = logging.getLogger(__name__)

PUBLIC_FILE = "curve.key"
SECRET_FILE = "curve.secret"
REFUSAL_LOG_S = 60.0  # a refused key is logged at most once a minute


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def _check_key(raw: bytes, where: str) -> bytes:
    key = raw.strip()
    try:
        if len(key) != 40 or len(zmq.utils.z85.decode(key)) != 32:
            raise ValueError("not 40 Z85 characters")
    except ValueError as exc:
        raise KeyFileError(f"{where}: not a CURVE key ({exc}); expected 40 Z85 characters") from exc
    return key


def read_public_key(path: str | os.PathLike[str]) -> bytes:
    """A peer's public key from a file holding it (e.g. another node's curve.key)."""
    try:
        return _check_key(Path(path).read_bytes(), str(path))
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {str(path)!r}: {exc.strerror}") from exc


def resolve_public_key(value: str) -> bytes:
    """A public key given on the command line or in config: the 40 Z85 characters, or a file holding them."""
    if len(value) == 40 and not Path(value).exists():
        return _check_key(value.encode(), "public key")
    return read_public_key(value)


def save_keypair(data_dir: str | os.PathLike[str], keys: KeyPair, secret_name: str = SECRET_FILE,
                 public_name: str = PUBLIC_FILE) -> None:
    """Write a key pair into ``data_dir``: the secret at 0600, then the public key, each atomically."""
    d = Path(data_dir)
    write_atomic(d / secret_name, keys.secret + b"\n", 0o600)
    write_atomic(d / public_name, keys.public + b"\n", 0o644)


def load_or_create_keypair(data_dir: str | os.PathLike[str], secret_name: str = SECRET_FILE,
                           public_name: str = PUBLIC_FILE) -> KeyPair:
    """The node's key pair, made on first start and kept in ``data_dir`` (secret at 0600); another pair
    (a rotation's next key) under other file names."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    pub_path, sec_path = d / public_name, d / secret_name
    if not sec_path.exists():
        public, secret = zmq.curve_keypair()
        save_keypair(d, KeyPair(public, secret), secret_name, public_name)
        return KeyPair(public, secret)
    check_private_mode(sec_path, "secret key")
    secret = _check_key(sec_path.read_bytes(), str(sec_path))
    public = zmq.curve_public(secret)
    if not pub_path.exists() or pub_path.read_bytes().strip() != public:
        write_atomic(pub_path, public + b"\n", 0o644)
    return KeyPair(public, secret)


class Allowlist:
    """The public keys a server admits, from a file re-read whenever it changes.

    Its ``callback(domain, key)`` is what pyzmq's authenticator calls for each
    CURVE handshake. ``decide`` returns ``(allowed, reason)`` for logs and tests.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._keys: dict[bytes, str] = {}
        self._stamp: tuple[int, int] | None = None
        self.refused = 0
        self.errors: list[str] = []
        self._told: dict[bytes, float] = {}  # key -> when its refusal was last logged

    def keys(self) -> dict[bytes, str]:
        self._reload()
        return dict(self._keys)

    def add(self, key: bytes, name: str = "") -> None:
        """Append a key to the file (atomically rewritten)."""
        self._reload()
        key = _check_key(key, "key to add")
        if key in self._keys:
            return
        lines = [f"{k.decode()} {n}".rstrip() for k, n in {**self._keys, key: name}.items()]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode(), 0o644)

    def decide(self, key: bytes) -> tuple[bool, str]:
        self._reload()
        if key in self._keys:
            return True, f"known key {self._keys[key] or key.decode()}"
        self.refused += 1
        self._tell_owner(key)
        return False, "unknown key"

    def _tell_owner(self, key: bytes) -> None:
        """Log a refused handshake once per key per minute, with what admits it: a refused peer only sees its
        connection go silent, so the server's log is where its owner learns why."""
        now = time.monotonic()
        if now - self._told.get(key, -REFUSAL_LOG_S) < REFUSAL_LOG_S:
            return
        if len(self._told) >= 10_000:
            self._told.clear()
        self._told[key] = now
        log.warning("refused a CurveZMQ handshake from an unknown key", extra={
            "key": key.decode(errors="replace"), "allowlist": str(self.path),
            "admit": f"append the line '{key.decode(errors='replace')} <name>' to {self.path} (re-read on change)"})

    def callback(self, domain: str, key: bytes) -> bool:
        return self.decide(key)[0]

    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        keys: dict[bytes, str] = {}
        self.errors = []
        for n, line in enumerate(self.path.read_bytes().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(b"#"):  # '#' is also a Z85 digit: comments are whole lines
                continue
            key, _, name = line.partition(b" ")
            try:
                keys[_check_key(key, f"{self.path}:{n}")] = name.strip().decode(errors="replace")
            except KeyFileError as exc:
                # one bad line must not lock every other peer out: skip it and say so
                self.errors.append(str(exc))
                log.error("allowlist line skipped", extra={"error": str(exc)})
        self._keys, self._stamp = keys, stamp


def start_authenticator(ctx: zmq.asyncio.Context, allowlist: Allowlist) -> zmq.auth.asyncio.AsyncioAuthenticator:
    """A running ZAP handler on ``ctx`` admitting only ``allowlist``'s keys. Call ``.stop()`` when done."""
    auth = zmq.auth.asyncio.AsyncioAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", allowlist)
    return auth


def secure_server(sock: zmq.Socket, keys: KeyPair) -> None:
    """Make ``sock`` a CURVE server with a frame-size cap; bind after this."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME + 1024)


def secure_client(sock: zmq.Socket, keys: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` a CURVE client of the server holding ``server_public``; connect after this."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME + 1024)
