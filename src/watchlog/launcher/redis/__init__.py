"""The local Redis Cluster the launcher runs: its config, its nodes, the manager."""
