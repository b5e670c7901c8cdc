"""The annotator's two hot routes, ``next`` and ``submit``, on Postgres without the ORM.

Every annotator calls both once per label. Through the ORM in a worker thread they cost
~8 ms of Python each on the project's 2-core reference machine, and a request waiting for
the GIL between two statements kept its row locks (the project row every submit updates)
that long too. Here each request is one call of a database function (``app/fastpath/sql``,
installed by ``annoloop migrate``) on an async psycopg pool in autocommit: one round trip,
no thread hop, and row locks held for the server-side work only (figures in
docs/reliability.md).

The rules are those of ``app.queue.service`` and ``app.annotations.service``, which SQLite
(and any app given its own session factory, such as the tests' rolled-back one) still
runs; ``rules.py`` names each, and the API tests for the queue and for labels run against
both paths. If the database's functions are not the files' (``check.py``), the ORM serves.
"""
