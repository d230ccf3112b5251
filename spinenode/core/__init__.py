"""The shared core: settings, database and migrations, states, storage, errors, logs, DIMSE
status codes, the task contract, TLS contexts and the study repository. It imports nothing of
the receiver, the stages or the application."""
