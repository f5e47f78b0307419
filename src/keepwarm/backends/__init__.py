"""Where loops run: OS processes (local) or Dask workers, and the Dask cluster."""
