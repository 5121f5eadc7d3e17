"""What the conformance tests share: keys per shard, reads and their routes, raw RESP,
discovery and healing, latency, counted traffic, the profile's expectations. No tests here."""
