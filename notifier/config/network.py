"""Addresses in the configuration: gunicorn's bind forms, loopback-only
development, and the CORS origin allowlist."""

from __future__ import annotations

import ipaddress
import re

from .reader import PREFIX, Reader


def check_loopback_bind(reader: Reader) -> None:
    """Development mode hands a cookie for any user to whoever asks (the dev
    page): it may listen on this machine only."""
    bind = reader.environ.get(PREFIX + "BIND") or "127.0.0.1:8000"
    for address in (part.strip() for part in bind.split(",")):
        if address and not _is_loopback(address):
            reader.problem(f"NOTIFIER_ENV=development listens on loopback only (127.0.0.1, ::1, localhost or a unix "
                           f"socket); NOTIFIER_BIND has {address!r}. Set NOTIFIER_ENV=production to serve others")


def _is_loopback(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address
    if address.startswith("["):
        host = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        host = address.split(":", 1)[0]
    elif address.isdigit():
        return False  # a bare port: every interface
    return is_loopback_host(host)


def is_loopback_host(name: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cors_origins(reader: Reader) -> tuple[str, ...]:
    """Exact origins (``https://app.example.com``): credentials are allowed for
    these, so a wildcard would hand every site the user's session."""
    raw = reader.text("CORS_ORIGINS")
    if raw is None:
        return ()
    origins = tuple(dict.fromkeys(part.strip().rstrip("/") for part in raw.split(",") if part.strip()))
    for origin in origins:
        if "*" in origin:
            reader.problem("NOTIFIER_CORS_ORIGINS lists exact origins; a wildcard would let any site read with the "
                           "user's cookie")
        elif not origin.startswith(("https://", "http://")) or "/" in origin.split("://", 1)[1]:
            reader.problem(f"NOTIFIER_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
    return origins


_PORT = re.compile(r"\d{1,5}")


def valid_bind(address: str) -> bool:
    """gunicorn's address forms; a port, when given, is 0-65535."""
    if address.startswith("unix:"):
        return len(address) > len("unix:")
    if address.startswith("fd://"):
        return address[len("fd://"):].isdigit()
    if any(char.isspace() for char in address):
        return False
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return False  # "[::1]8000"
    else:
        host, colon, port_text = address.rpartition(":")
        host, port = (host, port_text) if colon else (address, None)
        if ":" in host:
            return False  # an IPv6 address needs brackets
    return bool(host) and (port is None or (_PORT.fullmatch(port) is not None and int(port) <= 65535))
