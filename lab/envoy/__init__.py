"""Envoy configuration: an Istio-shaped sidecar baseline, EnvoyFilter patches, the admin API."""
