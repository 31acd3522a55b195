"""Reading 32-bit little-endian ELF images (the firmware edgeyard links for Cortex-M boards): sections
and sized symbols, for the memory report and for finding functions the emulator watches."""

import struct
from pathlib import Path

from .errors import BuildError

_SHT_SYMTAB, _SHT_NOBITS = 2, 8
_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2
_THUMB_BIT = 1  # a Thumb function's symbol value is its address plus 1


def layout(path: Path) -> tuple[list[dict], list[dict]]:
    """Sections {"name", "bytes", "flash", "ram"} and sized symbols {"symbol", "bytes", "section", "address"} of
    a 32-bit little-endian ELF image. Flash holds what is loaded; RAM what is writable."""
    data = path.read_bytes()
    section_offset = struct.unpack_from("<I", data, 0x20)[0]
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<10I", data, section_offset + i * entry_size) for i in range(count)]

    def string(table: int, offset: int) -> str:
        start = headers[table][4] + offset
        return data[start:data.index(b"\0", start)].decode()

    sections = []
    for name_offset, kind, flags, _, _, size, *_ in headers:
        allocated = bool(flags & _SHF_ALLOC)
        sections.append({"name": string(names_index, name_offset), "bytes": size,
                         "flash": allocated and kind != _SHT_NOBITS, "ram": allocated and bool(flags & _SHF_WRITE)})
    symbols = []
    for header in headers:
        if header[1] != _SHT_SYMTAB:
            continue
        offset, size, strings = header[4], header[5], header[6]
        for start in range(offset, offset + size, 16):
            name_offset, value, symbol_size, _, _, section = struct.unpack_from("<IIIBBH", data, start)
            if symbol_size and 0 < section < count and (sections[section]["flash"] or sections[section]["ram"]):
                symbols.append({"symbol": string(strings, name_offset), "bytes": symbol_size,
                                "section": sections[section]["name"], "address": value})
    return sections, symbols


def function_addresses(path: Path, names: tuple[str, ...]) -> dict[str, int] | None:
    """The code addresses of the named functions (Thumb bit cleared), or None when the image lacks any of them."""
    try:
        _, symbols = layout(path)
    except (struct.error, ValueError, IndexError) as err:
        raise BuildError(f"{path} is not a readable 32-bit ELF image ({err}).") from None
    found = {s["symbol"]: s["address"] & ~_THUMB_BIT for s in symbols if s["symbol"] in names}
    return found if len(found) == len(names) else None
