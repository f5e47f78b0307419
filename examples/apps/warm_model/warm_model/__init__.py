"""warm_model: a table built once in ``preload()`` and shared by every loop forked from the template."""

import os

# One BLAS thread: the loops are the parallelism, and a template must have no threads when it forks
# (OpenBLAS starts its own at import when allowed more than one). Set before the app imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
