"""Plotly figures for the notebooks, one module per part of the pipeline.

``data`` (notebooks 00-01), ``proposals`` (02), ``attention`` (03-05), ``training`` (06-07),
``evaluation`` (08) and ``windows`` (09); ``marks`` holds the colours and marks they share. The
figures only draw: each takes numbers (computed by the module that owns them) and returns a
``go.Figure``. The ipywidgets wrappers around these live in ``fscal_edu.widgets``. This file
only re-exports their public names, so ``fscal_edu.viz.<name>`` works too.
"""
from .marks import COMMON, OTHER, SUPPORT, VIDEO, bars, gt_boxes, legend_above, segment_lines  # noqa: F401
from .data import (  # noqa: F401
    class_split_figure, episode_heatmaps_figure,
    episode_timeline_figure, feature_grid_figure, feature_heatmap_figure, instances_in_snippets,
    knob_sweep_figure, resample_figure, score_curve_figure, snippet_axis_figure
)
from .proposals import (  # noqa: F401
    KEPT, PROPOSAL, SOFT, anchors_figure, ar_an_figure, nms_figure, pr_curve_figure,
    roi_align_figure
)
from .attention import (  # noqa: F401
    JOINT, AttentionView, attention_entropy, attention_matrix_figure, attention_pair_figure,
    attention_timeline_figure, attention_view, coarse_names, granularity_mass_figure, proposal_marks,
    proposals_are_sources, query_mass_figure, query_timeline, spread_over_time, stage_attention_figure,
    stage_layout
)
from .training import (  # noqa: F401
    HIT, LABEL_COLOURS, LABEL_NAMES, LOSS_KEYS, MISS, ON_DISTRACTOR, detections_timeline_figure,
    label_assignment_figure, loss_curve_figure, loss_terms_figure, lr_schedule_figure,
    metrics_by_tiou_figure, model_diagram_figure, model_edges, model_nodes, parameter_counts,
    parameters_figure, relation_scores_figure
)
from .evaluation import (  # noqa: F401
    ABLATION_COLOURS, ablation_figure, attention_explorer_figure, episode_attention_figure, explorer_figures,
    mechanisms_figure, per_class_ap_figure, timeline_stages
)
from .windows import instance_lengths_figure, window_mask_figure, windows_figure, window_rows  # noqa: F401
