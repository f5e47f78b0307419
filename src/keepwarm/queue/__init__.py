"""The file queue: the task schema and records, the service's files on disk, results, events, retention."""
