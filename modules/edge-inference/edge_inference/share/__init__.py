"""The shares: watching the input share, claiming frames, the ledger, writing results, mounts, temp files."""
