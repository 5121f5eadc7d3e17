"""The command line: `redis-mesh-lab up | status | down | list`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lab import model, paths, procs
from lab.backends import BACKENDS, UpOptions, get_backend
from lab.errors import LabError
from lab.progress import Progress
from lab.state import LabState, all_states


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-mesh-lab",
        description="Provision the Istio/Envoy Redis Cluster tutorial as a lab.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a lab up")
    up.add_argument("--backend", default="local", help=f"one of {', '.join(BACKENDS)}")
    up.add_argument("--name", default="default", help="the lab's name (default: default)")
    up.add_argument("--read-policy", default=model.DEFAULT_READ_POLICY, type=str.upper,
                    help=f"one of {', '.join(model.READ_POLICIES)} (default: REPLICA)")
    up.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                    help="mirror writes to redis-mirror (default: on)")
    up.add_argument("--proxy-port", type=int, default=None,
                    help="local: the proxy's loopback port (default: a free one)")
    up.add_argument("--envoy-concurrency", type=int, default=None, metavar="N",
                    help="local: Envoy worker threads (default: Envoy's, one per core)")
    up.add_argument("--envoyfilter", action="append", default=[], metavar="FILE",
                    help="an extra EnvoyFilter applied after the lab's own (repeatable): "
                         "a mutant lab, judged by the suite, not refused by `up`")
    up.add_argument("--istio", default="modern", choices=("modern", "tutorial"),
                    help="kind/existing: Istio profile (default: modern)")
    up.add_argument("--kubeconfig", default=None, help="existing: the cluster's kubeconfig")
    up.add_argument("--context", default=None, help="existing: the kubeconfig context")
    up.add_argument("--preload-images", action="store_true",
                    help="kind: load the images into the nodes (offline use)")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="kind/existing: keep the cluster when `up` fails, for debugging")
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.add_argument("--quiet", action="store_true", help="no progress output")

    status = sub.add_parser("status", help="show a lab")
    status.add_argument("--name", default="default")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    down = sub.add_parser("down", help="stop everything a lab started")
    down.add_argument("--name", default="default")
    down.add_argument("--quiet", action="store_true")

    sub.add_parser("list", help="list the labs in this directory")
    return parser


def _up(args: argparse.Namespace) -> int:
    if args.read_policy not in model.READ_POLICIES:
        raise LabError(f"unknown read policy {args.read_policy!r}; valid: "
                       f"{', '.join(model.READ_POLICIES)}")
    paths.check_name(args.name)
    if args.envoy_concurrency is not None and args.envoy_concurrency < 1:
        raise LabError(f"--envoy-concurrency must be at least 1, not {args.envoy_concurrency}")
    backend = get_backend(args.backend)
    options = UpOptions(name=args.name, read_policy=args.read_policy, mirror=args.mirror,
                        proxy_port=args.proxy_port, istio=args.istio,
                        kubeconfig=args.kubeconfig, context=args.context,
                        preload_images=args.preload_images, dry_run=args.dry_run,
                        keep=args.keep_on_failure,
                        envoy_concurrency=args.envoy_concurrency,
                        envoyfilters=_envoyfilter_files(args.envoyfilter))
    if args.dry_run:
        print(backend.dry_run(options))
        return 0
    progress = Progress(quiet=args.quiet)
    progress.say(f"redis-mesh-lab up: lab {args.name!r} on backend {backend.name}")
    if options.envoyfilters:
        progress.say("a mutant lab: extra EnvoyFilters after the lab's own: "
                     + ", ".join(str(f) for f in options.envoyfilters)
                     + " (ready once Envoy is LIVE; the suite judges the proxy)")
    state = backend.up(options, progress)
    progress.say(f"ready in {progress.elapsed:.2f}s")
    print(_describe(state))
    return 0


def _envoyfilter_files(files: list[str]) -> tuple[Path, ...]:
    found = []
    for file in files:
        path = Path(file).expanduser()
        if not path.is_file():
            raise LabError(f"--envoyfilter {file}: no such file")
        found.append(path.resolve())
    return tuple(found)


def _running(state: LabState) -> list[str]:
    return [p.name for p in state.processes if procs.running(p.pid, p.expect)]


def _where(part: dict[str, object]) -> str:
    via = f"  (via {part['via']})" if part.get("via") else ""
    return f"{part.get('host', '?')}:{part.get('port', '?')}{via}"


def _describe(state: LabState) -> str:
    lines = [
        f"lab {state.name} ({state.backend}"
        + (f", Istio {state.istio_profile}" if state.istio_profile else "")
        + f"), Envoy {state.envoy_version}, Redis {state.redis_version}",
        f"  proxy   {_where(state.proxy)}",
        f"  admin   {_where(state.admin)}",
        f"  mirror  {_where(state.mirror)}  mirroring {'on' if state.mirror_enabled else 'off'}",
        f"  read_policy {state.read_policy}",
    ]
    extra = getattr(state, "envoyfilters", None) or []
    if extra:
        lines.append(f"  mutant lab: extra EnvoyFilters {', '.join(extra)}")
    if state.backend == "local":
        lines[1] += f"   (redis-cli -h {state.proxy['host']} -p {state.proxy['port']})"
    for index, shard in enumerate(state.topology.shards):
        ranges = ",".join(f"{a}-{b}" for a, b in shard.slots)
        replicas = ", ".join(f"{r.name} {r.address}" for r in shard.replicas)
        lines.append(f"  shard[{index}] slots {ranges}: master {shard.master.name} "
                     f"{shard.master.address}, replica {replicas}")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    state = LabState.load(paths.check_name(args.name))
    if state is None:
        raise LabError(f"lab {args.name!r} is not up (redis-mesh-lab up --name {args.name})")
    running = _running(state)
    if args.json:
        data = state.to_json()
        data.pop("extra", None)
        data["running"] = running
        print(json.dumps(data, indent=2))
    else:
        print(_describe(state))
        print(f"  processes running: {len(running)}/{len(state.processes)}")
    return 0 if len(running) == len(state.processes) else 1


def _down(args: argparse.Namespace) -> int:
    name = paths.check_name(args.name)
    state = LabState.load(name)
    backend = get_backend(state.backend if state else "local")
    progress = Progress(quiet=args.quiet)
    if backend.down(name, progress):
        progress.say(f"lab {name!r} is down")
    else:
        progress.say(f"lab {name!r} was not up")
    return 0


def _list(_: argparse.Namespace) -> int:
    for state in all_states():
        running = _running(state)
        print(f"{state.name}\t{state.backend}\t{len(running)}/{len(state.processes)} running")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"up": _up, "status": _status, "down": _down, "list": _list}
    try:
        return commands[args.command](args)
    except LabError as exc:
        print(f"redis-mesh-lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("redis-mesh-lab: interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
