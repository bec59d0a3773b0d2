"""Who may talk to the server: where it binds, the API key, the Host header."""
from __future__ import annotations

import hmac
import ipaddress
import os

from ..errors import AdaptlabError

DEFAULT_KEY_ENV = "ADAPTLAB_API_KEY"
DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; a host name other than localhost is not
    trusted to be loopback (it may resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_from_env(env: str | None) -> str | None:
    """The key clients must send: from `env` (which must then be set), else from
    $ADAPTLAB_API_KEY if set, else None (no key: loopback only)."""
    if env is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    key = os.environ.get(env)
    if not key:
        raise AdaptlabError(f"${env} is not set (it should hold the API key clients must send)")
    return key


def check_bind(host: str, api_key: str | None) -> None:
    if not api_key and not is_loopback(host):
        raise AdaptlabError(
            f"refusing to serve on {host or 'all interfaces'} without an API key: set "
            f"${DEFAULT_KEY_ENV} (or name another variable with --api-key-env), or bind to "
            f"{DEFAULT_HOST}")


def key_ok(header: str | None, key: bytes) -> bool:
    """Whether an Authorization header carries `key` as a bearer token (constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key)


def host_name(host: str) -> str:
    """The name in a Host header, without the port ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
