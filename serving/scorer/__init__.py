"""Fast scoring: a calibrated pipeline compiled into plain Python for one row, numpy for many.

`model.predict_proba` on a one-row DataFrame spends most of its time in pandas and the
ColumnTransformer. `CompiledScorer.compile` reads the fitted parameters out of a calibrated
pipeline built by `loanops.features.build_model` once, and then scores without either:

- logistic regression: imputer fill, log1p, standard scaling and weight per number, and the
  weight of the one-hot column each category value lights up (infrequent bucket included);
- HistGradientBoosting: each category value's final ordinal code (through our OrdinalEncoder and
  the one the classifier adds internally), and the trees flattened into lists;
- either: Platt's sigmoid `expit(-(a * f + b))` on the pipeline's `decision_function` f, as
  `sklearn.calibration._CalibratedClassifier.predict_proba` does.

The tree part reads scikit-learn internals (`_predictors`, `_preprocessor`, `_bin_mapper`,
`_baseline_prediction`, the `TreePredictor` node records), last checked against 1.9.1. Anything
the compiler does not recognise raises `UnsupportedModelError`, and so does any disagreement with
the pipeline on probe rows drawn from the schema at compile time. Serving then refuses the version
(`serving.model.load_version` raises `ModelLoadError`, and the current model keeps serving), so
a scikit-learn upgrade can stop a new version from loading but never makes it mis-score.

It lives beside its only user: the API and the batch workers load models through
`serving.model`, which compiles each version once. Modules: `compiled` (`CompiledScorer`: the
pipeline around the classifier, calibration, verification), `linear` and `trees` (the two
families), `parts` (the inputs both read, and `UnsupportedModelError`).
"""
