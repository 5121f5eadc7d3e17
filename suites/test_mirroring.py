"""WriteMirroring: every write also reaches redis-mirror, with identical arguments; no read."""

from __future__ import annotations

from collections import Counter

import allure
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from .keys import per_shard, text


@pytest.mark.feature("WriteMirroring")
def test_writes_are_mirrored_and_reads_are_not(lab):
    """set/get b through the proxy: MONITOR on redis-mirror shows every set, no get"""
    keys = per_shard(lab.topology, "mirror", 2)
    values = {key: f"{key} value\twith spaces" for key in keys}
    writes = [("SET", key, value) for key, value in values.items()]
    writes += [("APPEND", key, "+tail") for key in keys]
    writes += [("INCRBY", f"{key}:n", "7") for key in keys]
    mirror = lab.client(lab.mirror)

    @retry(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True)
    def mirror_has_everything() -> None:
        for key, value in values.items():
            assert text(mirror.get(key)) == value + "+tail"
            assert text(mirror.get(f"{key}:n")) == "7"

    ours = set(keys) | {f"{key}:n" for key in keys}

    def on_mirror(entries) -> list:
        return [e for e in entries if e.node == lab.mirror.name and e.args[1:2] and
                e.args[1] in ours]

    with lab.monitor([lab.mirror]) as capture:
        for command in writes:
            with allure.step(" ".join(command).lower()):
                lab.proxy.execute_command(*command)
        for key in keys:
            with allure.step(f"get {key}"):
                assert text(lab.proxy.execute_command("GET", key)) == values[key] + "+tail"
        with allure.step("MONITOR on redis-mirror: wait for the mirrored writes"):
            # Mirroring is fire-and-forget: the client's reply does not wait for it.
            capture.wait_until(lambda entries: len(on_mirror(entries)) >= len(writes))
    seen = on_mirror(capture.entries)
    mirrored = Counter(tuple([e.args[0].upper(), *e.args[1:]]) for e in seen
                       if e.command != "GET")
    assert mirrored == Counter(writes), "the mirror did not get every write, verbatim"
    assert not [e for e in seen if e.command == "GET"], "a read reached the mirror"
    with allure.step("redis-mirror holds what was written"):
        mirror_has_everything()
