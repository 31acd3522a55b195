"""Network addresses given on the command line (a board's SSH host, a TVM RPC tracker, a GDB server):
checked here, so that only a plain host name or IP address reaches another program's command line."""

import re

from ..errors import BadInput

# A host name or an IPv4 address, or an IPv6 address in brackets.
HOST = r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])"
_HOST_PORT = re.compile(rf"({HOST}):([0-9]{{1,5}})")


def host_port(text: str, option: str, what: str) -> tuple[str, int]:
    """(host, port) from HOST:PORT given as `option`, naming `what` listens there in the error."""
    match = _HOST_PORT.fullmatch(text)
    if match is None or not 0 < int(match[2]) < 65536:
        raise BadInput(f"{option} '{text}' is not HOST:PORT of {what}.")
    return match[1], int(match[2])
