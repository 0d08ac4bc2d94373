# nbval runs the notebooks in quick mode unless FSCAL_QUICK is set otherwise: they then load the
# shipped checkpoints and results instead of training (also for a bare `pytest notebooks/`).
import os

os.environ.setdefault("FSCAL_QUICK", "1")
