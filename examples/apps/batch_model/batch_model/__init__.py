"""batch_model: a numpy "model" served in batches (``work_batch``) or one input at a time (``work``)."""

import os

# One BLAS thread per loop: the service's loops are the parallelism, and BLAS threads spinning beside
# them would take cores from the rest. Set here, before any module of the app imports numpy; it has no
# effect in a process that imported numpy earlier.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
