"""Drift monitoring: a window of logged decisions against the reference sample of its model.

Where it sits: `flows/train.py` builds a `Reference` for each new version (`reference`:
`build_reference`, `save_reference`) and logs the folder as an artifact of that version; the
`monitor` flow loads it (`load_reference`), streams a window of the decision log or an offline
file into `run.monitor_window`, saves the reports (`reports.write_reports`) and logs
`MonitorSummary.metrics()` (`results`). This package runs no flow and logs nothing itself.

Modules: `thresholds` (what counts as drift, built from the settings by `monitor_thresholds`),
`reference` (the reference sample and its statistics, on disk), `window` (a window's batches,
coerced to the schema), `statistics` (PSI and the two-sample KS of the score, also from counts),
`quality` (data quality on every row), `sample` (the seeded sample Evidently sees),
`streaming` (the one pass over a window that feeds them), `drift_plan` (which tests, on which
samples), `evidently_mapping` (the column mapping and the report's parts), `results` (the
typed summary), `run` (one run, step by step) and `reports` (the files a run writes).

A window is read once, batch by batch, and never held whole: a run keeps counts, the sample and
one batch, so its memory does not grow with the window. Every statistic below is the
same however the window is cut into batches (PSI and KS to the bit, from exact counts; the
sample is the same rows), and the same as on the window held as one DataFrame (`run_monitor`);
only the mean score can differ, in its last bits (a sum of per-batch sums).

What is computed where:

- **On every row of the window**, in vectorised pandas/numpy, because it is cheap and exact:
  null rates, values outside the schema's range, values that are not of the feature's type,
  categories unknown to the schema or never seen in the reference, and the drift of the score
  (`probability`): PSI over the reference's deciles, and the two-sample Kolmogorov-Smirnov
  statistic between the window's and the reference's scores (`statistics.ks_drift_statistic`).
- **On a seeded random sample** (`sample_rows`, 50k by default) of the window (drawn as its
  batches pass, `sample.WindowSample`) and of the reference, with Evidently 0.7: the
  per-feature drift tests (`DataDriftPreset`, whose `DriftedColumnsCount` gives the share of
  drifted features), a `ValueDrift` on `probability`, and a `DataSummaryPreset` for the HTML.
  The distances used on large windows estimate a population quantity, so a 50k-row sample
  gives the same answer as a million rows to within a few thousandths, well inside the 0.1
  threshold; a p-value on a million rows, by contrast, calls any shift significant, however
  small.
- **Once per model version**, in `reference_statistics`: null rates, ranges, category shares,
  the drift test chosen for each feature and the score deciles used by PSI. They are stored as
  JSON next to the Parquet sample and loaded, not recomputed, on each run.

Choice of drift test. Evidently picks a test from the *reference* size: KS / chi-square (p-values)
up to 1,000 reference rows, normed Wasserstein / Jensen-Shannon distances (threshold 0.1) above,
and a categorical test for numeric columns with at most 5 distinct values. A 100k-row reference
always gets distances, but a distance estimated from a small *current* window is biased upward:
Jensen-Shannon between two samples of the same 51-state distribution averages 0.08 at 1,000 rows
(0.20 at 200, 0.04 at 5,000), so a quiet night would raise a false alarm. Here the test is fixed
per feature from the reference (distance family: Wasserstein for numeric features with more
than 5 distinct values, Jensen-Shannon otherwise), and a window smaller than
`MonitorThresholds.min_rows_for_distance` (5,000) switches to the p-value family instead
(KS for numeric features, chi-square for categorical ones), whose false-alarm rate is the
significance level at any size. The choice is recorded in the summary.
"""
