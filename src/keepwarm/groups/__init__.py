"""Groups of services and tasks: fleets and workflow runs."""
