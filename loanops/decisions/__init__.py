"""The decision log: every scoring decision the serving tier makes, kept in a SQL database.

- `record`: the `Decision` record and the values its fields may take;
- `table`: the ``decisions`` table and the declarative `Base` of the log's tables;
- `database`: engines for SQLite and PostgreSQL, and the migrations (`migrate`);
- `bulk`: a batch as columns, stored as its slim rows and one segment (`write_segment`);
- `write`: `Decision` records stored the same way (`write_decisions`), and `check_storable`;
- `read`: a time window back as a DataFrame (`read_decisions`) or a count;
- `stream`: a time window as bounded batches of Arrow columns (`stream_decisions`), the
  monitor's read;
- `spill`: decisions saved to files when the database cannot take them (`load_spill`).

The API's batching writer, which runs in a process of its own, is `serving.decision_log`.
"""
