"""`invoke doctor`: every tool the targets need on this machine, found (with its version) or missing (with the
install hint a build would give).

The plug-ins declare the tools (Backend.tools, Runner.tools, the flashers' programs; toolchain/hostenv/tools.py);
this module only applies the rule. For each listed target:
  required  the tools of its default backend (of every backend it lists when the default is auto, which may
            try each) and of its runners: what its default `invoke build` uses here;
  optional  its other backends' tools and the tools declared optional (a real board's probes, vendor synthesis),
            plus this machine's report tools (graphviz dot, chromium).
A required tool that is missing fails the check: exit 3, like the build it would stop.
"""

from dataclasses import dataclass, field

from .. import backends, runners
from ..boards.flashers import flasher_tools
from ..errors import EdgeyardError, MissingTool
from ..hostenv import tools
from ..hostenv.tools import Tool
from ..target.profile import AUTO_BACKEND, Target, load_target, target_names
from .model_graph import DOT_HINT

# Tools of this machine rather than of a target: optional, since a report without its drawing is still a report.
REPORT_TOOLS = (
    tools.program("dot", DOT_HINT, "draws the model graph in report.html", version_flag="-V", optional=True),
    tools.program("chromium", "install it with: apt-get install chromium, or run ./bootstrap.sh.",
                  "renders the HTML reports in the browser test", optional=True),
)


@dataclass
class ToolStatus:
    name: str
    purposes: list[str]
    found: str | None = None  # its version or where it is
    problem: str | None = None  # why it is missing, with the install hint
    required_by: list[str] = field(default_factory=list)
    optional_for: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    targets: list[str]
    tools: list[ToolStatus]

    @property
    def missing(self) -> list[ToolStatus]:
        """The required tools that are missing: any makes `invoke doctor` exit 3."""
        return [status for status in self.tools if status.problem is not None and status.required_by]


def target_tools(target: Target) -> list[tuple[Tool, bool]]:
    """(tool, required) for everything target's builds and its board may use here, by the module's rule."""
    default = target.backends if target.default_backend == AUTO_BACKEND else (target.default_backend,)
    declared = [(tool, name in default) for name in target.backends for tool in backends.get(name).tools(target)]
    declared += [(tool, True) for name in target.runners for tool in runners.get(name).tools(target)]
    declared += [(tool, False) for tool in flasher_tools(target)]
    return [(tool, required and not tool.optional) for tool, required in declared]


def diagnose(target_list: list[str] | None = None) -> Diagnosis:
    """Check every tool of the listed targets (default: every target profile), each once."""
    names = target_list or target_names()
    declared: dict[str, list[Tool]] = {}
    required: dict[str, dict[str, bool]] = {}  # tool -> target -> whether that target's default build needs it
    for name in names:
        for tool, needed in target_tools(load_target(name)):
            declared.setdefault(tool.name, []).append(tool)
            by_target = required.setdefault(tool.name, {})
            by_target[name] = by_target.get(name, False) or needed
    for tool in REPORT_TOOLS:
        declared.setdefault(tool.name, []).append(tool)
        required.setdefault(tool.name, {})
    statuses = []
    for tool_name, variants in declared.items():
        status = ToolStatus(tool_name, list(dict.fromkeys(tool.purpose for tool in variants)),
                            required_by=[t for t, needed in required[tool_name].items() if needed],
                            optional_for=[t for t, needed in required[tool_name].items() if not needed])
        try:
            status.found = variants[0].locate()
        except MissingTool as err:  # the hint alone when the tool is the one missing, else which one is
            status.problem = err.hint if err.tool == tool_name else str(err)
        except EdgeyardError as err:  # e.g. the qemu plugin's version check, when qemu itself is missing
            status.problem = str(err)
        statuses.append(status)
    return Diagnosis(names, statuses)


def doctor_text(diagnosis: Diagnosis) -> str:
    """The table, then one line saying whether every target can build."""
    from ..console import table

    rows = [[status.name, "found" if status.problem is None else "MISSING" if status.required_by else "missing",
             ", ".join(status.required_by) or "-", ", ".join(status.optional_for) or "-",
             status.found if status.problem is None else status.problem, "; ".join(status.purposes)]
            for status in diagnosis.tools]
    text = table(["tool", "status", "required by", "optional for", "version, or how to install it", "what for"], rows)
    missing = diagnosis.missing
    if not missing:
        return text + f"\n\nevery tool the default builds of {len(diagnosis.targets)} target(s) need is here."
    blocked = sorted({target for status in missing for target in status.required_by})
    return text + (f"\n\nthe default build of {', '.join(blocked)} would stop: {', '.join(s.name for s in missing)} "
                   f"missing; install as the table says, then run invoke doctor again.")
