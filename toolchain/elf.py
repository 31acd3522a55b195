"""Reading 32-bit little-endian ELF images (the firmware edgeyard links for Cortex-M boards): sections,
symbols and what a loader writes where. The one reader behind measuring firmware, finding the functions
the emulator watches, and checking what a probe wrote."""

import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

SHT_SYMTAB, SHT_NOBITS = 2, 8
SHF_WRITE, SHF_ALLOC = 0x1, 0x2
PT_LOAD = 1
_SYMBOL_BYTES = 16
_THUMB_BIT = 1  # a Thumb function's symbol value is its address plus 1


@dataclass(frozen=True)
class Section:
    name: str
    kind: int  # sh_type
    flags: int
    address: int  # where the program sees it (VMA)
    offset: int  # where its bytes are in the file
    size: int
    link: int  # for a symbol table: the index of its string table

    @property
    def loaded(self) -> bool:
        """Its bytes are in the image: a loader writes them (on a board, to flash)."""
        return bool(self.flags & SHF_ALLOC) and self.kind != SHT_NOBITS

    @property
    def writable(self) -> bool:
        """It takes RAM while the program runs."""
        return bool(self.flags & SHF_ALLOC) and bool(self.flags & SHF_WRITE)


@dataclass(frozen=True)
class Symbol:
    name: str
    size: int
    section: int  # index into ElfImage.sections; 0 or past the end: none (undefined, absolute, common)
    value: int  # its address (a Thumb function's with bit 0 set)


@dataclass(frozen=True)
class LoadedSection:
    name: str
    address: int  # where a loader writes it (LMA): .data lands in flash, and start-up copies it to RAM
    content: bytes


class ElfImage:
    def __init__(self, path: Path):
        try:
            self._read(Path(path))
        except (OSError, struct.error, ValueError, IndexError) as err:  # missing, truncated or damaged
            raise BadInput(f"{path} is not a readable 32-bit ELF image ({err}).") from None

    def _read(self, path: Path) -> None:
        self.path = path
        data = self.data = self.path.read_bytes()
        if data[:4] != b"\x7fELF" or data[4:6] != b"\x01\x01" or len(data) < 0x34:
            raise BadInput(f"{path} is not a 32-bit little-endian ELF image.")
        self.entry, program_offset, section_offset = struct.unpack_from("<III", data, 0x18)
        program_size, program_count, section_size, section_count, names = struct.unpack_from("<HHHHH", data, 0x2A)
        # (p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...)
        self.segments = [struct.unpack_from("<8I", data, program_offset + i * program_size)
                         for i in range(program_count)]
        headers = [struct.unpack_from("<10I", data, section_offset + i * section_size) for i in range(section_count)]
        names_offset = headers[names][4] if names < section_count else 0
        self.sections = [Section(self._string(names_offset, h[0]), *h[1:7]) for h in headers]

    def _string(self, table_offset: int, offset: int) -> str:
        start = table_offset + offset
        return self.data[start:self.data.index(b"\0", start)].decode(errors="replace")

    def symbols(self) -> list[Symbol]:
        try:
            return self._symbols()
        except (struct.error, ValueError, IndexError) as err:
            raise BadInput(f"{self.path} has a damaged symbol table ({err}).") from None

    def _symbols(self) -> list[Symbol]:
        found = []
        for table in (s for s in self.sections if s.kind == SHT_SYMTAB):
            strings = self.sections[table.link].offset
            for start in range(table.offset, table.offset + table.size, _SYMBOL_BYTES):
                name_offset, value, size, _, _, section = struct.unpack_from("<IIIBBH", self.data, start)
                found.append(Symbol(self._string(strings, name_offset), size, section, value))
        return found

    def loaded_sections(self) -> list[LoadedSection]:
        """What a loader (gdb's `load`, a flash programmer) writes: each loaded section at its load address,
        from the PT_LOAD segment that holds its bytes."""
        loaded = []
        for section in (s for s in self.sections if s.loaded and s.size):
            segment = next((p for p in self.segments if p[0] == PT_LOAD and p[1] <= section.offset < p[1] + p[4]),
                           None)
            if segment is None:
                raise BadInput(f"{self.path}: section {section.name} is in no loadable segment.")
            loaded.append(LoadedSection(section.name, segment[3] + section.offset - segment[1],
                                        self.data[section.offset:section.offset + section.size]))
        return loaded


def layout(path: Path) -> tuple[list[dict], list[dict]]:
    """Sections {"name", "bytes", "flash", "ram"} and sized symbols {"symbol", "bytes", "section"} of the
    image. Flash holds what is loaded; RAM what is writable."""
    image = ElfImage(path)
    sections = [{"name": s.name, "bytes": s.size, "flash": s.loaded, "ram": s.writable} for s in image.sections]
    symbols = [{"symbol": symbol.name, "bytes": symbol.size, "section": sections[symbol.section]["name"]}
               for symbol in image.symbols()
               if symbol.size and 0 < symbol.section < len(sections)
               and (sections[symbol.section]["flash"] or sections[symbol.section]["ram"])]
    return sections, symbols


def function_addresses(path: Path, names: tuple[str, ...]) -> dict[str, int] | None:
    """The code addresses of the named functions (Thumb bit cleared), or None when the image lacks any of them."""
    found = {s.name: s.value & ~_THUMB_BIT for s in ElfImage(path).symbols() if s.name in names and s.size}
    return found if len(found) == len(names) else None
