"""What serves viewers: the endpoints, the follow algorithm (replay then live tail), the
poller that reads runs of other processes, and the wire formats."""
