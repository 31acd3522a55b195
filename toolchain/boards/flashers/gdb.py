"""Any GDB server (pyocd gdbserver, OpenOCD, J-Link GDB Server, ST-LINK GDB server, Black Magic Debug,
qemu-system's gdbstub): gdb-multiarch loads the ELF image over the GDB remote protocol, checks it
(compare-sections, then the sha256 of every loaded section read back), starts it as a Cortex-M reset
would (from the image's vector table: any server can do that, unlike its own reset command), and
detaches, leaving the core running. The script comes from templates/flash.gdb.j2."""

import hashlib
import struct

from ... import codegen
from ...elf import ElfImage
from ...errors import BadInput
from . import SCRIPT_NAME, FlasherCaps, FlashPlan, FlashRequest, register

VECTOR_TABLE = ".vectors"  # where firmware/ld/sections.ld places the Cortex-M vector table
VTOR = 0xE000ED08  # Cortex-M vector table offset register
XPSR_THUMB = 1 << 24  # Cortex-M cores run Thumb code only
CONNECT_TIMEOUT_S = 10  # a server that does not answer; a closed port fails at once
REMOTE_TIMEOUT_S = 30  # one remote-protocol reply (erasing a flash sector takes a while)
SESSION_TIMEOUT_S = 600  # the whole session, e.g. 2 MB over a slow SWD link


class GdbFlasher:
    name = "gdb"
    program = "gdb-multiarch"
    install_hint = "install it with: apt-get install gdb-multiarch, or run ./bootstrap.sh."
    caps = FlasherCaps(reads_back=True, gdb_server=True)

    def plan(self, request: FlashRequest) -> FlashPlan:
        loaded = ElfImage(request.image).loaded_sections()
        vectors = next((s for s in loaded if s.name == VECTOR_TABLE and len(s.content) >= 8), None)
        if vectors is None:
            raise BadInput(f"{request.image} has no Cortex-M vector table (section {VECTOR_TABLE}) to start it from.")
        initial_sp, reset_handler = struct.unpack_from("<II", vectors.content)
        host, port = request.server
        server = f"{host}:{port}"
        sections = [{"name": s.name, "address": s.address, "size": len(s.content),
                     "sha256": hashlib.sha256(s.content).hexdigest()} for s in loaded]
        script = codegen.render_text(
            "flash.gdb.j2", image=request.image.name, server=server, connect_timeout_s=CONNECT_TIMEOUT_S,
            remote_timeout_s=REMOTE_TIMEOUT_S, sections=sections, vtor=VTOR, vectors=vectors.address,
            initial_sp=initial_sp, entry=reset_handler & ~1, xpsr=XPSR_THUMB)
        total = sum(s["size"] for s in sections)
        return FlashPlan(
            [[self.program, "-nx", "-batch", "-x", SCRIPT_NAME, str(request.image)]],
            verifies=f"{len(sections)} sections, {total:,} bytes, read back through {server}: compare-sections "
                     f"matched and each section's sha256 equals the image's",
            script=script, timeout_s=SESSION_TIMEOUT_S,
            what=f"flashing {request.image.name} through the GDB server at {server}")


register(GdbFlasher())
