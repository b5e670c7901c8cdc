"""What a worker does with the database and blob store around the ML core (``worker.ml``)."""
