"""Render templates/ with Jinja. Every piece of C, C++ and script text the tool writes lives there."""

import keyword
import re
from pathlib import Path

from .atomic import atomic_write
from .console import markdown_cell, printable
from .paths import TEMPLATES_DIR

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int "
    "long register restrict return short signed sizeof static struct switch typedef union unsigned void "
    "volatile while bool true false class namespace template typename new delete this public private "
    "protected virtual operator friend using try catch throw".split()
)


def c_identifier(name: str, taken: set[str] | None = None) -> str:
    """A valid, non-reserved C identifier made from any string; unique within `taken` (which it updates)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    if ident in _C_KEYWORDS or keyword.iskeyword(ident) or ident.startswith("__"):
        ident = "m_" + ident.lstrip("_")
    if taken is not None:
        base, n = ident, 1
        while ident in taken:
            ident = f"{base}_{n}"
            n += 1
        taken.add(ident)
    return ident


def _environment(template: str):
    """Jinja for templates/; for Markdown (.md.j2) every {{ value }} passes console.markdown_cell, so a
    name with a newline, a '|' or an escape sequence cannot break a table or reach a terminal raw; for
    HTML (.html.j2) every value has its control characters written as escapes and is HTML-escaped (a
    drawing passed as Markup goes in as it is)."""
    import jinja2
    from markupsafe import Markup

    html = template.endswith(".html.j2")
    finalize = markdown_cell if template.endswith(".md.j2") else None
    if html:
        finalize = lambda value: value if isinstance(value, Markup) else printable(str(value))  # noqa: E731
    return jinja2.Environment(
        autoescape=html,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=finalize,
    )


def render_text(template: str, **context) -> str:
    """templates/<template> rendered with `context`."""
    return _environment(template).get_template(template).render(**context)


def render(template: str, out_path: Path, mode: int | None = None, **context) -> Path:
    """Render templates/<template> with `context` into out_path, atomically (chmod `mode` if given)."""
    return atomic_write(out_path, render_text(template, **context), mode)
