"""The report of a sweep: the paper's Table 2 and Figures 3 and 4, with our numbers beside the paper's.

`build_report(SWEEP_DIR)` reads every run directory of a sweep (config.yaml, eval_val.json, log.jsonl,
versions.json, and diagnose_val.* when `cycleseg diagnose` has been run) and writes

    SWEEP_DIR/report.md          Markdown, figures linked from report_files/
    SWEEP_DIR/report.html        one self-contained file, figures embedded
    SWEEP_DIR/report_files/*.png the figures

The paper's values come from the data file paper_table2.csv next to this module.

A sweep with seeds (SWEEP_DIR/CONFIG/seed<k>/) gives one row per config: the mean over its finished seeds with
the 95 % Student-t interval and the per-seed values (`stats`), and, for each noise row, the difference to the
no-noise row paired by seed; Figure 4 has error bars and the curves a band over the seeds. With one run per
config the report is the one without seeds. Runs not finished yet (a sweep still running) are listed as
missing and left out of every number.

The modules: records (RunRecord: one run, read through runs.summary, which decides which results count; the
paper's Table 2), tables (the numbers and statistics, and the text of `cycleseg table`), figures (every
`plot_<name>`, drawing only), render (the sections, Markdown and HTML) and build (`build_report`). This
package re-exports their public names.
"""

from __future__ import annotations

from cycleseg.report.build import FILES, build_report
from cycleseg.report.figures import (
    EVAL_CLASSES,
    _class_names,
    plot_class_iou,
    plot_curves,
    plot_examples,
    plot_labelled_fraction,
    plot_seed_curves,
    plot_watermark_training,
)
from cycleseg.report.records import (
    RunRecord,
    collect_runs,
    group_runs,
    labelled_fraction,
    load_paper_table,
    read_run,
    table2_key,
)
from cycleseg.report.tables import (
    CONTRAST_METRICS,
    WATERMARK_METRICS,
    choose_runs,
    format_table,
    mechanism_contrasts,
    paired_rows,
    results_table,
    reward_rows,
    runs_table,
    seed_spread,
    table2_rows,
    watermark_rows,
    watermark_training,
)

__all__ = [
    "CONTRAST_METRICS",
    "EVAL_CLASSES",
    "FILES",
    "WATERMARK_METRICS",
    "RunRecord",
    "_class_names",
    "build_report",
    "choose_runs",
    "collect_runs",
    "format_table",
    "group_runs",
    "labelled_fraction",
    "load_paper_table",
    "mechanism_contrasts",
    "paired_rows",
    "plot_class_iou",
    "plot_curves",
    "plot_examples",
    "plot_labelled_fraction",
    "plot_seed_curves",
    "plot_watermark_training",
    "read_run",
    "results_table",
    "reward_rows",
    "runs_table",
    "seed_spread",
    "table2_key",
    "table2_rows",
    "watermark_rows",
    "watermark_training",
]
