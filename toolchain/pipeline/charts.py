"""The charts of report.html, comparison.html and coverage.html, as inline SVG text.

matplotlib draws them: it writes SVG with no browser, no network and no JavaScript (altair needs a
separate renderer, plotly's self-contained HTML is megabytes of script), and its SVG escapes the text
it draws. It is imported inside each function, so importing this module (a cached build) costs nothing.
"""

import io

# One colour per meaning across every chart and the model graph.
COLOURS = {"main": "#4477aa", "second": "#ee7733", "limit": "#cc3311", "ok": "#228833", "muted": "#bbbbbb"}


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("svg", force=True)  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "text.parse_math": False,  # names with '$' stay text
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(figsize=(width, height))


def _svg(fig) -> str:
    """The figure as an <svg> element (no XML prolog, no DOCTYPE naming a remote DTD), the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _short(label: str, limit: int = 40) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "…"


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def latency_histogram(timings_ms: list[float], median: float, p90: float, label: str) -> str:
    """Each timed run's latency, with the median and p90 as lines; `label` says what the times are."""
    fig, ax = _figure(6.5, 2.6)
    ax.hist(timings_ms, bins=min(30, max(5, len(timings_ms) // 3)), color=COLOURS["main"])
    ax.axvline(median, color=COLOURS["ok"], label=f"median {median:.3f} ms")
    ax.axvline(p90, color=COLOURS["second"], linestyle="--", label=f"p90 {p90:.3f} ms")
    ax.ticklabel_format(axis="x", useOffset=False)  # emulated runs differ by microseconds: plain values, no "+1.215"
    ax.set_xlabel(f"latency per inference, ms ({label})")
    ax.set_ylabel("runs")
    ax.legend(frameon=False)
    return _svg(fig)


def layer_bars(layers: list[dict], unit: str) -> str:
    """Per-layer cost in `unit` (instructions or cycles) beside each layer's MACs, layer order top to bottom."""
    fig, ax = _figure(6.5, 0.6 + 0.22 * len(layers))
    labels = [f"{layer['layer']} {layer['op']}" for layer in layers]
    positions = range(len(layers))
    ax.barh(positions, [layer[unit] for layer in layers], color=COLOURS["main"], label=unit)
    ax.barh(positions, [layer["macs"] for layer in layers], height=0.35, color=COLOURS["second"], label="MACs")
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit} and MACs per inference")
    ax.legend(frameon=False, loc="lower right")
    return _svg(fig)


def memory_bars(regions: list[tuple[str, dict[str, int], int | None]]) -> str:
    """One stacked bar per region (flash, RAM): its sections' bytes, and the board's capacity as a line."""
    fig, ax = _figure(6.5, 0.9 + 0.6 * len(regions))
    palette = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377", "#bbbbbb", "#ee7733"]
    colour_of: dict[str, str] = {}
    for row, (region, sections, capacity) in enumerate(regions):
        left = 0
        for name, size in sections.items():
            first = name not in colour_of  # each section in the legend once
            colour = colour_of.setdefault(name, palette[len(colour_of) % len(palette)])
            ax.barh(row, size, left=left, color=colour, label=name if first else None)
            left += size
        if capacity:
            ax.plot([capacity, capacity], [row - 0.45, row + 0.45], color=COLOURS["limit"], linewidth=2)
    ax.set_yticks(range(len(regions)), [region for region, _, _ in regions])
    ax.set_xlabel("bytes (a red line: the board's capacity)")
    ax.xaxis.set_major_formatter(_thousands())
    ax.legend(frameon=False, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return _svg(fig)


def arena_timeline(blocks: list[dict], arena_bytes: int) -> str:
    """The static memory plan: each tensor a bar from its first to its last layer, at its offset in the arena;
    the arena's size as a line."""
    fig, ax = _figure(6.5, 3.2)
    for block in blocks:
        scratch = block["tensor"].startswith("scratch")
        ax.broken_barh([(block["first_layer"] - 0.4, block["last_layer"] - block["first_layer"] + 0.8)],
                       (block["offset"], block["bytes"]), facecolors=COLOURS["second" if scratch else "main"],
                       edgecolor="white", linewidth=0.5)
    ax.axhline(arena_bytes, color=COLOURS["limit"], label=f"arena {arena_bytes:,} B")
    ax.set_xlabel("layer (a bar: a tensor alive from its first to its last layer; orange: a layer's scratch)")
    ax.set_ylabel("offset in the arena, bytes")
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(frameon=False, loc="upper right")
    return _svg(fig)


def paired_bars(title: str, names: list[str], series: list[tuple[str, list[float]]], unit: str) -> str:
    """Grouped horizontal bars: one group per name, one bar per series (before/after, backends)."""
    fig, ax = _figure(6.5, 0.8 + 0.35 * len(names) * len(series))
    height = 0.8 / len(series)
    colours = [COLOURS["main"], COLOURS["second"], COLOURS["ok"], COLOURS["muted"]]
    for index, (label, values) in enumerate(series):
        ax.barh([row + index * height for row in range(len(names))], values, height=height,
                color=colours[index % len(colours)], label=label)
    ax.set_yticks([row + height * (len(series) - 1) / 2 for row in range(len(names))], [_short(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=9, loc="left")
    if len(series) > 1:
        ax.legend(frameon=False, loc="lower right")
    return _svg(fig)
