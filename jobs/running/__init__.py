"""What runs in a worker: executing a claimed run with its output captured, the
supervisor that keeps its runs honest, and the worker process's lifecycle. Imports
nothing of the serving side."""
