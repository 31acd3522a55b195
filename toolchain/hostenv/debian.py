"""apt-get and apt-cache with a private configuration: another architecture's binary packages, or
Debian source packages, without touching this machine's apt state and without root."""

import os
import pwd
from pathlib import Path

from .. import proc

RELEASE = "bookworm"  # Debian 12, which Raspberry Pi OS is built on
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_ARCHIVES = [
    f"http://deb.debian.org/debian {RELEASE} main",
    f"http://deb.debian.org/debian {RELEASE}-updates main",
    f"http://deb.debian.org/debian-security {RELEASE}-security main",
]


class AptConfig:
    """An apt configuration in `root`: binary packages of `architecture`, or source packages when None."""

    def __init__(self, root: Path, architecture: str | None):
        for folder in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "state/status").touch()
        kind = "deb" if architecture else "deb-src"
        (root / "etc/sources.list").write_text("".join(f"{kind} [signed-by={KEYRING}] {a}\n" for a in _ARCHIVES))
        settings = {
            "Dir::Etc::SourceList": root / "etc/sources.list", "Dir::Etc::SourceParts": root / "etc/sources.list.d",
            "Dir::State": root / "state", "Dir::State::status": root / "state/status", "Dir::Cache": root / "cache",
            # Files here belong to whoever runs the build; apt's _apt sandbox user could not write them.
            "APT::Sandbox::User": pwd.getpwuid(os.getuid()).pw_name,
        }  # fmt: skip
        if architecture:
            settings.update({"APT::Architecture": architecture, "APT::Architectures": architecture})
        self.options = [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def run(self, tool: str, command: str, *args: str, cwd: Path | None = None) -> str:
        """stdout of `tool command args...` ("apt-get", "update"); BuildError quoting stderr on failure."""
        return proc.run([tool, "-q", *self.options, command, *args], what=f"{tool} {command}", cwd=cwd,
                        tail_lines=4).stdout
