"""The native launcher: a local Redis Cluster and every watchlog process, without Docker."""
