"""Batch scoring of uploaded files on Celery workers.

`upload` receives a file, `store` keeps the job state in SQL and `volume` its files, `client`
sends the job to the queue, and `tasks` (the workers, `loanops worker`) split it, score each
chunk (`chunks`, `validation`) and record the decisions; `sweep` sends again what was lost.
"""
