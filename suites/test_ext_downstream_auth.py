"""DownstreamAuth: with `downstream_auth_passwords` set, the proxy asks its clients for AUTH.

On a variant lab (manifests/variants/downstream-auth.yaml). Envoy's replies, as documented in
its redis proxy filter: `NOAUTH Authentication required.` before AUTH, `ERR invalid password`
for a wrong one, `OK` for the right one, and then commands are served.
"""

from __future__ import annotations

import allure
import pytest

from lab.conformance.variants import Variant

from .support.keys import per_shard
from .support.raw import Raw

AUTH = Variant("auth", envoyfilters=("downstream-auth.yaml",))
PASSWORD = "rml-downstream-secret"  # the variant's, in downstream-auth.yaml


@pytest.mark.feature("DownstreamAuth")
def test_commands_need_auth_first(lab_variant):
    """get/set before AUTH refused; wrong password refused; served after AUTH"""
    variant = lab_variant(AUTH)
    keys = list(per_shard(variant.topology, "auth", 1))
    raw = Raw(variant)
    try:
        with allure.step("set before auth: NOAUTH"):
            assert raw.call("SET", keys[0], "v") == "-NOAUTH Authentication required."
            first = variant.client(variant.topology.shard_for_key(keys[0]).master)
            assert first.exists(keys[0]) == 0, "the refused SET was executed"
        with allure.step("get before auth: NOAUTH"):
            assert raw.call("GET", keys[0]) == "-NOAUTH Authentication required."
        with allure.step("auth with a wrong password: refused"):
            assert raw.call("AUTH", "not-" + PASSWORD) == "-ERR invalid password"
        with allure.step("still refused after the wrong password"):
            assert raw.call("GET", keys[0]) == "-NOAUTH Authentication required."
        with allure.step("auth with the password"):
            assert raw.call("AUTH", PASSWORD) == "+OK"
        for key in keys:  # one on every shard
            with allure.step(f"set/get {key} after auth"):
                assert raw.call("SET", key, key) == "+OK"
                assert variant.wait_replicated(variant.topology.shard_for_key(key).master) >= 1
                assert raw.call("GET", key) == key
                master = variant.topology.shard_for_key(key).master
                assert variant.client(master).get(key) == key.encode()
        assert raw.call("DEL", *keys) == len(keys)
    finally:
        raw.close()
