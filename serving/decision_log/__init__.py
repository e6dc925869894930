"""The API's decision-log writer: a batching writer in a process of its own.

- `batching`: `BatchingWriter`, decisions queued in memory and written in batches by a thread;
- `worker`: `WriterProcess`, a `BatchingWriter` in a child process fed by a queue;
- `handle`: `DecisionLogProcess`, the server's side of it: queues, restarts, the backlog;
- `overflow`: the files the handle saves decisions to when the writer is too far behind;
- `messages`: what the server and the writer process send each other.

The record, the table and the idempotent write are the domain's, in `loanops.decisions`.
"""
