"""Benchmarks: a redis-benchmark driver (ProxyOverhead), the Envoy x Redis matrix, charts."""
