"""fscal-edu: a teaching implementation of few-shot common action localization (FS-CAL).

Lee, Jain, Yun, "Few-Shot Common Action Localization via Cross-Attentional Fusion of Context
and Temporal Dynamics", ICCV 2023. See README.md and notebooks/ for the guided tour.
"""
__version__ = "0.1.0"
