"""The training run's lineage tags: the data, its provenance, and how much of it was fitted on."""

from __future__ import annotations

from flows.train import lineage_tags, rescore_fold_seed
from loanops.data import load_dataset
from loanops.features import split_frame


def test_lineage_counts_all_rows_and_the_train_split_and_carries_the_provenance() -> None:
    loaded = load_dataset("synthetic", rows=2_000, seed=1)
    splits = split_frame(loaded.frame, loaded.schema, test_size=0.2, validation_size=0.25, seed=1)

    tags = lineage_tags(loaded, splits)

    assert sum(len(split) for split in (splits.train, splits.validation, splits.test)) == 2000
    assert tags["loanops.data_rows"] == "2000"
    assert tags["loanops.training_rows"] == str(len(splits.train))
    assert len(splits.train) < 2000
    provenance = {
        key.removeprefix("loanops.provenance."): value
        for key, value in tags.items()
        if key.startswith("loanops.provenance.")
    }
    assert provenance == dict(loaded.dataset.provenance)
    assert provenance["generator_version"]
    assert tags["loanops.dataset_sha256"] == loaded.sha256


def test_rescoring_folds_are_seeded_apart_from_the_search_and_stay_valid_for_numpy() -> None:
    assert rescore_fold_seed(42) == 43
    assert rescore_fold_seed(2**32 - 1) == 0
