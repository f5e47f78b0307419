"""``keepwarm http``: tasks, results, health and metrics of one namespace's services over HTTP."""
