"""The log store: turning a job's output into numbered lines, storing them, and announcing
them in this process. Both the running side (which writes) and the streaming side (which
reads and follows) build on it; it imports neither."""
