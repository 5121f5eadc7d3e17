"""Every pinned version, in one place."""

from __future__ import annotations

# The image of every Redis container (cluster nodes, client, mirror) on Kubernetes.
REDIS_IMAGE = "docker.io/library/redis:7.0.15"

# Allure Report 3 (npm package "allure") builds the HTML report without Java.
ALLURE_NPM = "allure@3.18.0"
