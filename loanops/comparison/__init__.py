"""Champion against challenger on the same live applications: the compare report's domain core.

A window of paired decisions (one record per application, both models' scores and decisions;
the columns are `paired.PAIRED_COLUMNS`) is summarised by concern:

- `window`: a window of the decision log read as that frame, outcomes joined in;
- `paired`: the frame contract, and the choice of one challenger version's pairs;
- `swaps`: the swap set, who each model approves that the other declines, with PDs per cell;
- `decisions`: agreement, PD shift, per-segment approval rates and expected cost;
- `ranking`: AUC, KS, calibration and the paired bootstrap interval of the AUC difference, on
  the loans whose outcomes have arrived, overall and by vintage;
- `report`: the `ComparisonReport` that gathers them (its JSON is the stable schema), and its
  headline metrics;
- `render`: the report as an HTML page (`templates/comparison.html.j2`) and as a text table;
- `record`: the report logged to MLflow as a `live_comparison` run under the challenger's
  version, which the maker-checker's approval request reads.
"""
