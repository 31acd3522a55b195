"""SSH to a board with the system's OpenSSH client: commands with `ssh`, files with `scp`.

Every command is an argv list; what runs on the board is a command line built only from
shlex-quoted words, so nothing a user typed is ever read by a shell unquoted. Host keys are checked
as ssh always checks them: BatchMode turns its questions into errors, so an unknown or changed host
key fails the connection rather than being accepted. A user points ssh at the board's key with
known_hosts (UserKnownHostsFile) or keeps it in ~/.ssh/known_hosts.
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import BadInput, BuildError
from .address import HOST

# [user@]host, the host a name, an IPv4 address or a bracketed IPv6 address: no option-like or
# shell-special text reaches ssh's command line.
_DESTINATION = re.compile(rf"(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?{HOST}")
# Paths on the board that this module names itself (relative to the login folder, or under /tmp).
_REMOTE_PATH = re.compile(r"[A-Za-z0-9._+/-]+")
_SSH_FAILED = 255  # ssh's own exit status when it could not connect or authenticate
_CONNECT_TIMEOUT_S = 15


def remote_path(path: str) -> str:
    """`path` when it is safe to name on the board (no shell specials, no option-like start, no ..)."""
    if not _REMOTE_PATH.fullmatch(path) or path.startswith("-") or ".." in path.split("/"):
        raise BadInput(f"'{path}' is not a usable folder name on the board (letters, digits, . _ + - and /).")
    return path


@dataclass(frozen=True)
class SshLink:
    host: str  # [user@]address
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None

    def __post_init__(self):
        if not _DESTINATION.fullmatch(self.host):
            raise BadInput(f"--host '{self.host}' is not [USER@]ADDRESS.")
        if self.port is not None and not 0 < self.port < 65536:
            raise BadInput(f"--port {self.port} is not a TCP port.")
        for option, path in (("--identity", self.identity), ("--known-hosts", self.known_hosts)):
            if path is not None and not Path(path).is_file():
                raise BadInput(f"{option} {path}: file not found.")

    def _options(self, port_flag: str) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={_CONNECT_TIMEOUT_S}"]
        if self.port is not None:
            options += [port_flag, str(self.port)]
        if self.identity is not None:
            options += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return options

    def run(self, words: list[str], stdin: str | None = None, timeout_s: float = 600, check: bool = True,
            what: str | None = None) -> proc.CompletedProcess:
        """Run `words` on the board (quoted into one command line); its output, or BuildError when it fails."""
        argv = [_tool("ssh"), *self._options("-p"), "--", self.host, shlex.join(words)]
        return self._call(argv, what or f"`{words[0]}` on {self.host}", stdin, timeout_s, check)

    def upload(self, local: Path, remote: str, timeout_s: float = 600) -> None:
        """Copy the file or folder `local` to `remote` on the board (modes kept, a folder recursively)."""
        argv = [_tool("scp"), "-q", "-r", "-p", *self._options("-P"), "--", str(local), f"{self.host}:{remote}"]
        self._call(argv, f"copying {local.name} to {self.host}", None, timeout_s, True)

    def download(self, remotes: list[str], local_dir: Path, timeout_s: float = 600) -> None:
        """Copy the files `remotes` from the board into `local_dir`."""
        sources = [f"{self.host}:{remote}" for remote in remotes]
        argv = [_tool("scp"), "-q", "-p", *self._options("-P"), "--", *sources, str(local_dir)]
        self._call(argv, f"copying results from {self.host}", None, timeout_s, True)

    def _call(self, argv: list[str], what: str, stdin: str | None, timeout_s: float,
              check: bool) -> proc.CompletedProcess:
        result = proc.run(argv, input=stdin, timeout_s=timeout_s, what=what, check=False)
        if result.returncode == _SSH_FAILED:
            raise BuildError(f"{what} failed: {_connection_problem(result.stderr, self)}")
        if check and result.returncode != 0:
            raise proc.failure(result, what)
        return result


def _connection_problem(stderr: str, link: SshLink) -> str:
    lines = [line for line in stderr.strip().splitlines() if line and not line.startswith("Warning:")]
    reason = lines[-1] if lines else "ssh could not connect"
    if "Host key verification failed" in stderr:
        where = link.known_hosts or "~/.ssh/known_hosts"
        reason += (f" (the board's host key is not in {where}: connect once with plain ssh and check its "
                   "fingerprint, or add it with ssh-keyscan after checking it)")
    return reason


def _tool(name: str) -> str:
    return proc.require(name, "install it with: apt-get install openssh-client.")
