"""Where the entrypoints listen, and which addresses may go without API keys.

Standard library only: the command line parses addresses before it knows whether the
server side is installed, and the gRPC and web entrypoints both check them.
"""

from __future__ import annotations

import ipaddress

DEFAULT_ADDRESS = "127.0.0.1:50051"  # gRPC; the SDK connects here by default too
DEFAULT_HTTP = "127.0.0.1:8080"  # the web UI


def is_loopback(address: str) -> bool:
    """Whether `host:port` listens on this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http_address(text: str) -> tuple[str, int]:
    """HOST:PORT (port 0: any free port); raises ValueError with what is allowed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid HTTP address {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)
