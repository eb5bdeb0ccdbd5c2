"""worker: the Celery side of the service, a thin adapter between the queue and dcl_core.

A task takes a job id from the queue, claims the job in the job store (one
compare-and-set with a lease), calls the engine with hooks that report progress and
honour cancellation, and records the result. Importing this package is cheap: torch is
imported only inside the task, in the pool's child process (never in the parent, so CUDA
never initialises before the fork).

Start one with `python -m worker [--gpu N] [--queues gpu,cpu] [--concurrency 1]`
(or `dcl worker ...`).
"""
