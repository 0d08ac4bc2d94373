"""Plotly figures for the notebooks, one module per part of the pipeline.

``data`` (notebooks 00-01), ``proposals`` (02), ``attention`` (03-05), ``training`` (06-07) and
``evaluation`` (08) and ``windows`` (09). The ipywidgets wrappers around these live in ``fscal_edu.widgets``. This file
only re-exports their public names, so ``fscal_edu.viz.<name>`` works too.
"""
from .data import (  # noqa: F401
    COMMON, OTHER, SUPPORT, VIDEO, class_split_figure, episode_heatmaps_figure,
    episode_timeline_figure, feature_grid_figure, feature_heatmap_figure, instances_in_snippets,
    knob_sweep_figure, resample_figure, score_curve_figure, snippet_axis_figure
)
from .proposals import (  # noqa: F401
    KEPT, PROPOSAL, SOFT, anchors_figure, ar_an_figure, nms_figure, pr_curve_figure,
    roi_align_figure
)
from .attention import (  # noqa: F401
    AttentionView, attention_view, coarse_names, fig_attention_matrix, fig_granularity_mass,
    fig_query_mass, fig_stage_attention, granularity_mass
)
from .training import (  # noqa: F401
    HIT, LABEL_COLOURS, LABEL_NAMES, LOSS_KEYS, MISS, ON_DISTRACTOR, detection_verdicts,
    detections_timeline_figure, label_assignment_figure, loss_curve_figure, loss_terms_figure,
    lr_schedule_figure, metrics_by_tiou_figure, parameter_counts, parameters_figure,
    relation_scores_figure
)
from .evaluation import (  # noqa: F401
    ABLATION_COLOURS, STAGE_TITLES, ablation_figure, explorer_figures, mechanisms_figure,
    per_class_ap_figure
)
from .windows import fig_instance_lengths, fig_window_mask, fig_windows, window_rows  # noqa: F401
