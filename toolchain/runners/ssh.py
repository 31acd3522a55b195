"""The ssh runner: a bundle runs on a real Linux board reached over SSH (`--host USER@ADDRESS`).

The bundle is deployed first (toolchain/boards/deploy.py: checked against manifest.json, copied, checked
again on the board; nothing is copied when the board already has it). Each run then copies the
inputs to a temporary folder on the board, runs the bundle's own `./run.sh IN OUT SAMPLES WARMUP
REPEAT` there, copies the outputs and timings back and removes the folder. The figures are the
board's own: not emulated.
"""


from ..boards import deploy
from ..boards.ssh import SshLink, remote_path
from ..bundle import Entry
from ..target.profile import Target
from . import register
from .base import Connection, Runner, RunnerCaps, RunRequest


class SshRunner(Runner):
    name = "ssh"
    caps = RunnerCaps(remote=True)

    def __init__(self, link: SshLink | None = None):
        self.link = link

    def connect(self, connection: Connection) -> "SshRunner":
        return SshRunner(SshLink(connection.host, connection.port, connection.identity, connection.known_hosts))

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if self.link is None:
            return "it needs a board: --host USER@ADDRESS"
        if target.os != "linux":
            return f"target {target.name} is not a Linux board"
        if entry.kind not in ("native", "python"):
            return "it runs Linux programs only"
        return None

    def execute(self, request: RunRequest) -> None:
        bundle_dir, manifest = request.bundle_dir, request.manifest
        remote_dir = deploy.deploy_bundle(bundle_dir, self.link, deploy.default_remote_dir(bundle_dir.parent)).remote_dir
        work = remote_path(self.link.run(["mktemp", "-d"]).stdout.strip())
        try:
            self.link.upload(request.in_dir, f"{work}/in")
            threads_env = [f"EDGEYARD_THREADS={request.threads}", f"TVM_NUM_THREADS={request.threads}"]
            protocol = [str(request.samples), str(request.warmup), str(request.repeat)]
            self.link.run(["env", *threads_env, "sh", "-c", 'mkdir "$1/out" && cd "$2" && exec ./run.sh "$1/in" '
                           '"$1/out" "$3" "$4" "$5"', "sh", work, remote_dir, *protocol],
                          timeout_s=request.timeout_s, what=f"the {manifest['backend']} bundle on {self.link.host}")
            results = [f"output{j}.bin" for j in range(len(manifest["outputs"]))]
            results += ["timings_ns.txt"] if request.repeat > 0 else []
            self.link.download([f"{work}/out/{name}" for name in results], request.out_dir)
        finally:
            self.link.run(["rm", "-rf", work], check=False)


register(SshRunner())
