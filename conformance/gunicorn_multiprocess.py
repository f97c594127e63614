"""gunicorn settings for prometheus_client's multiprocess mode: a worker
that exits has its live gauges removed from PROMETHEUS_MULTIPROC_DIR."""

from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
