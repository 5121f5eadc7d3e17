"""CommandCoverage (a measurement, not pass/fail): each command family probed through the proxy.

One probe per command on a fresh connection; the reply is recorded as Envoy gives it (served,
or its error text, or no reply within the probe's timeout). The table goes to the Allure report
and to `<run folder>/command-coverage.md` (and `.json`), with the Envoy version.
"""

from __future__ import annotations

import json

import allure

from lab import acl

from .support.keys import token
from .support.profile import only_in
from .support.raw import Raw

PROBE_TIMEOUT = 3.0


def _probes(k: str) -> list[tuple[str, tuple[str, ...]]]:
    """(family, command) pairs; every key is this run's, nothing is destructive."""
    return [
        ("strings", ("SET", k, "1")), ("strings", ("GET", k)), ("strings", ("INCR", k)),
        ("strings", ("GETSET", k, "2")), ("strings", ("STRLEN", k)),
        ("strings", ("SETRANGE", k, "0", "3")), ("strings", ("GETDEL", k)),
        ("bitmaps", ("SETBIT", k, "7", "1")), ("bitmaps", ("BITCOUNT", k)),
        ("bitmaps", ("BITOP", "AND", k, k)),
        ("keys", ("EXPIRE", k, "60")), ("keys", ("TTL", k)), ("keys", ("TYPE", k)),
        ("keys", ("PERSIST", k)), ("keys", ("RENAME", k, f"{k}-renamed")),
        ("keys", ("DUMP", f"{k}-renamed")), ("keys", ("OBJECT", "ENCODING", f"{k}-renamed")),
        ("keys", ("DEL", f"{k}-renamed")), ("keys", ("KEYS", f"{k}*")), ("keys", ("SCAN", "0")),
        ("keys", ("RANDOMKEY",)), ("keys", ("DBSIZE",)),
        ("hashes", ("HSET", f"{k}h", "f", "v")), ("hashes", ("HGETALL", f"{k}h")),
        ("lists", ("LPUSH", f"{k}l", "a", "b")), ("lists", ("LRANGE", f"{k}l", "0", "-1")),
        ("lists", ("RPOPLPUSH", f"{k}l", f"{k}l")), ("lists", ("BLPOP", f"{k}l", "1")),
        ("sets", ("SADD", f"{k}s", "a")), ("sets", ("SMEMBERS", f"{k}s")),
        ("sets", ("SUNION", f"{k}s", f"{k}s")),
        ("sorted sets", ("ZADD", f"{k}z", "1", "a")),
        ("sorted sets", ("ZRANGE", f"{k}z", "0", "-1")),
        ("streams", ("XADD", f"{k}x", "*", "f", "v")), ("streams", ("XLEN", f"{k}x")),
        ("streams", ("XREAD", "COUNT", "1", "STREAMS", f"{k}x", "0")),
        ("hyperloglog", ("PFADD", f"{k}p", "a")), ("hyperloglog", ("PFCOUNT", f"{k}p")),
        ("geo", ("GEOADD", f"{k}g", "13.36", "38.11", "a")), ("geo", ("GEOPOS", f"{k}g", "a")),
        ("multi-key", ("MGET", k, f"{k}h")), ("multi-key", ("MSET", k, "1", f"{k}m", "1")),
        ("multi-key", ("DEL", k, f"{k}h", f"{k}l", f"{k}s", f"{k}z", f"{k}x", f"{k}p",
                       f"{k}g", f"{k}m")),
        ("scripting", ("EVAL", "return redis.call('GET', KEYS[1])", "1", k)),
        ("scripting", ("SCRIPT", "EXISTS", "0" * 40)),
        ("transactions", ("MULTI",)), ("transactions", ("WATCH", k)),
        ("pub/sub", ("PUBLISH", f"{k}c", "m")), ("pub/sub", ("SUBSCRIBE", f"{k}c")),
        ("connection", ("PING",)), ("connection", ("ECHO", "x")), ("connection", ("SELECT", "0")),
        ("connection", ("HELLO", "2")), ("connection", ("HELLO", "3")),
        ("connection", ("CLIENT", "SETNAME", "x")), ("connection", ("QUIT",)),
        ("server", ("INFO", "server")), ("server", ("TIME",)), ("server", ("LASTSAVE",)),
        ("server", ("COMMAND", "COUNT")), ("cluster", ("CLUSTER", "INFO")),
        ("cluster", ("READONLY",)),
    ]


# Envoy forwarded the command, and the node's ACL refused it (lab.acl: the default user Envoy
# connects as keeps only what a proxy needs). That measures Envoy as "served".
FORWARDED = "served (node: NOPERM)"


def _summary(reply: object) -> tuple[str, str]:
    if isinstance(reply, str) and reply.startswith("-NOPERM"):
        return FORWARDED, reply[1:][:120]
    if isinstance(reply, str) and reply.startswith("-"):
        return "error", reply[1:][:120]
    shown = json.dumps(reply) if not isinstance(reply, str) else reply
    return "served", " ".join(shown.split())[:60]


def test_command_coverage_table(lab, request):
    """each command family probed through the proxy: served, or Envoy's reply"""
    only_in(request, "extended")
    k = f"cov-{token()}"
    rows = []
    for family, command in _probes(k):
        raw = Raw(lab, timeout=PROBE_TIMEOUT)
        try:
            outcome, detail = _summary(raw.call(*command))
        except TimeoutError:
            outcome, detail = "no reply", f"nothing within {PROBE_TIMEOUT:g} s"
        except (ConnectionError, OSError) as exc:
            outcome, detail = "connection closed", type(exc).__name__
        finally:
            raw.close()
        rows.append({"family": family, "command": " ".join(command[:2] if command[0] in
                     {"CLUSTER", "OBJECT", "SCRIPT", "CLIENT", "COMMAND"} else command[:1]),
                     "outcome": outcome, "reply": detail})
    lab.proxy.execute_command("DEL", k, f"{k}h", f"{k}l", f"{k}s", f"{k}z", f"{k}x", f"{k}p",
                              f"{k}g", f"{k}m", f"{k}-renamed")
    envoy = lab.state.envoy_version
    lines = [f"# CommandCoverage: Envoy {envoy}, through the proxy (backend {lab.state.backend})",
             "", "| family | command | outcome | reply |", "|---|---|---|---|"]
    lines += [f"| {r['family']} | `{r['command']}` | {r['outcome']} | "
              f"{r['reply'].replace('|', '/')} |" for r in rows]
    served = sum(r["outcome"] in ("served", FORWARDED) for r in rows)
    lines += ["", f"{served} of {len(rows)} probes served by Envoy.", "",
              "The nodes deny these commands to the unauthenticated user Envoy connects as "
              f"(the lab's ACL): {', '.join(acl.DENIED_NAMES)}. A probe Envoy forwarded and a "
              f"node refused reads `{FORWARDED}`."]
    table = "\n".join(lines) + "\n"
    allure.attach(table, name="CommandCoverage", attachment_type=allure.attachment_type.TEXT)
    try:
        from lab.pytest_plugin import record_measurement, run_folder

        record_measurement(request.node, "CommandCoverage", {
            "envoyVersion": envoy, "probes": len(rows), "served": served,
            "notServed": sorted(r["command"] for r in rows
                                if r["outcome"] not in ("served", FORWARDED)),
            "deniedByNodes": sorted(r["command"] for r in rows if r["outcome"] == FORWARDED),
            "table": "command-coverage.md"})
        folder = run_folder(request.config)
    except Exception:  # no run folder (e.g. the plugin is not driving reports): Allure only
        return
    if folder is None:  # no --lab-reports: nothing is written
        return
    (folder / "command-coverage.md").write_text(table, encoding="utf-8")
    (folder / "command-coverage.json").write_text(
        json.dumps({"envoyVersion": envoy, "probes": rows}, indent=2) + "\n", encoding="utf-8")
