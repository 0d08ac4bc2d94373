"""``python -m fscal_edu ...`` is ``fscal-edu ...``; torchrun needs this form:
``torchrun --nproc_per_node=N -m fscal_edu train ...``."""
from .cli import main

raise SystemExit(main())
