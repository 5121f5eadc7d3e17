"""MirrorFraction: a mirror policy with `runtime_fraction` 50% mirrors half of the writes.

On a variant lab (manifests/variants/mirror-fraction-50.yaml). N writes go through the proxy
on one connection; the mirror's MONITOR counts those that arrive. Envoy's mirror requests of
one client connection travel in order on one upstream connection, so once any of the
PROBES trailing writes has arrived (all 40 unmirrored: p = 2^-40), every earlier mirrored
write has too. The count must lie in [LOW, HIGH]: for Binomial(N, 1/2) the chance of falling
outside is below 1e-6 (asserted), while a 95%/100% or a 0-5% mirror falls outside for sure.
"""

from __future__ import annotations

import allure
import pytest

from lab.conformance.variants import Variant

from .support.keys import token
from .support.reads import binomial_tail

HALF = Variant("mirror50", mirror=True, envoyfilters=("mirror-fraction-50.yaml",))
N = 1000
LOW, HIGH = 420, 580
PROBES = 40


@pytest.mark.feature("MirrorFraction")
def test_half_of_the_writes_are_mirrored(lab_variant):
    """1000 SETs through a proxy mirroring 50%: between 420 and 580 reach the mirror"""
    assert 2 * binomial_tail(N, LOW - 1) < 1e-6  # symmetric: P(X > HIGH) == P(X < LOW)
    variant = lab_variant(HALF)
    run = token()
    keys = [f"frac-{run}-{i}" for i in range(N)]
    probes = [f"frac-{run}-probe-{i}" for i in range(PROBES)]
    client = variant.proxy_client()
    ours = set(keys)

    def arrived(entries) -> list:
        return [e for e in entries if e.command == "SET" and e.args[1:2] and e.args[1] in ours]

    try:
        with variant.monitor([variant.mirror]) as capture:
            with allure.step(f"set {N} keys through the proxy (pipelined, one connection)"):
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.set(key, "v")
                assert all(pipe.execute())
            with allure.step(f"{PROBES} trailing writes; wait for the first on the mirror"):
                pipe = client.pipeline(transaction=False)
                for probe in probes:
                    pipe.set(probe, "v")
                assert all(pipe.execute())
                assert capture.wait_until(lambda entries: any(
                    e.command == "SET" and e.args[1:2] and e.args[1] in set(probes)
                    for e in entries), timeout=20), "no trailing write reached the mirror"
        mirrored = len(arrived(capture.entries))
        allure.attach(f"{mirrored} of {N} writes mirrored (bounds {LOW}..{HIGH})",
                      name="mirrored share", attachment_type=allure.attachment_type.TEXT)
        assert len({e.args[1] for e in arrived(capture.entries)}) == mirrored, "a write twice"
        assert LOW <= mirrored <= HIGH, f"{mirrored} of {N} writes mirrored, not ~50%"
    finally:
        for chunk in range(0, N, 200):
            client.execute_command("DEL", *keys[chunk:chunk + 200])
        client.execute_command("DEL", *probes)
        variant.client(variant.mirror).delete(*keys, *probes)  # the DELs were sampled too
