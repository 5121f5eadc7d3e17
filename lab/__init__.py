"""redis-mesh-lab: the Istio/Envoy Redis Cluster tutorial as a lab and a conformance suite."""

__version__ = "0.1.0"
