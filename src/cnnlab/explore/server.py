"""Serving an :class:`~cnnlab.explore.session.ExploreSession` with uvicorn: loopback by default, a port in use
named before anything starts, Ctrl-C stops."""

from __future__ import annotations

import errno
import ipaddress
import socket
import webbrowser
from typing import Callable

import uvicorn

from cnnlab.errors import CnnlabError
from cnnlab.explore.app import create_app
from cnnlab.explore.session import ExploreSession

__all__ = ["DEFAULT_PORT", "ServeError", "check_address", "serve"]

DEFAULT_PORT = 8541


class ServeError(CnnlabError):
    """An address the explorer cannot listen on (a port in use, a host that is not this machine's)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, a port out of range or in use, or a host this machine cannot listen on."""
    if not 1 <= port <= 65535:
        raise ServeError(f"port {port} is not a TCP port; valid: 1-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServeError(f"host {host!r} cannot be resolved ({e.strerror}); e.g. 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {host} is in use; pass another --port") from None
            raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def serve(session: ExploreSession, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_browser: bool = False,
          log: Callable[[str], None] = print) -> None:
    """Serve the explorer until Ctrl-C (or SIGTERM)."""
    check_address(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if not _is_loopback(host):
        log(f"warning: serving on {host}: anyone who can reach this machine on that network can use the explorer")
    log(f"cnnlab explore: {session.path} ({session.spec.get('name')}) at {url}  (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(create_app(session), host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, date_header=False)
    uvicorn.Server(config).run()
