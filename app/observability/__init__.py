"""Operations: Prometheus metrics, JSON logs carrying request and task ids, Celery hooks.

Kept import-free on purpose: the worker imports ``celery_signals`` from here at start-up and
must not load ``prometheus_client`` before it has chosen its multiprocess directory
(see ``worker_metrics``). Import the module you need directly.
"""
