"""HistGradientBoosting compiled: each category value's final ordinal code (through our
OrdinalEncoder and the one the classifier adds internally), and the trees flattened into lists.

It reads scikit-learn internals (`_predictors`, `_preprocessor`, `_bin_mapper`,
`_baseline_prediction`, the `TreePredictor` node records and constructor), last checked against
1.9.1.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.preprocessing import OrdinalEncoder
from sklearn.utils import check_array

from loanops.explain import Variant
from serving.scorer.parts import (
    NAN,
    Block,
    CategoryTable,
    Change,
    Columns,
    FloatArray,
    UnsupportedModelError,
    is_identity,
    is_nan,
    transformer_steps,
)

_VARIANT_CELLS = 1 << 22
"""Most (variant row, tree) pairs `Forest.variants` holds at once, which bounds its memory."""


@dataclass(frozen=True)
class _TreeInput:
    """One column of the trees' input: a number, or a category's final ordinal code."""

    name: str
    codes: CategoryTable | None


@dataclass(frozen=True)
class Forest:
    """A HistGradientBoostingClassifier's raw score, its trees flattened into parallel lists.

    Node i is a leaf when `feature[i] < 0`. Otherwise a missing value goes left when
    `missing_left[i]`, a category code goes left when it is in `left_codes[i]`, and a number goes
    left when it is <= `threshold[i]`, as `_predictor._predict_one_from_raw_data` does. The
    lists hold every tree, one after another; `roots` are their first nodes.
    """

    inputs: tuple[_TreeInput, ...]
    baseline: float
    roots: tuple[int, ...]
    feature: list[int]
    threshold: list[float]
    missing_left: list[bool]
    left_codes: list[frozenset[int] | None]
    left: list[int]
    right: list[int]
    value: list[float]
    predictors: tuple[Any, ...]
    """The TreePredictors, for the vectorised path."""
    known_cat_bitsets: Any
    f_idx_map: Any
    paths: tuple[_LeafPaths, ...]
    """Per tree, which leaf each row reaches and which inputs its path reads, for `variants`."""

    family = "hist_gbt"
    one_by_one = 8

    def row(self, row: Mapping[str, Any]) -> float:
        # The walk of `_leaf`, inlined: a call per tree cost a quarter of a request's scoring.
        x = self._inputs_of(row)
        feature, threshold, missing_left = self.feature, self.threshold, self.missing_left
        left_codes, left, right, leaf_value = self.left_codes, self.left, self.right, self.value
        total = self.baseline
        for node in self.roots:
            while (f := feature[node]) >= 0:
                v = x[f]
                codes = left_codes[node]
                if v != v:
                    go_left = missing_left[node]
                elif codes is None:
                    go_left = v <= threshold[node]
                else:  # a negative code counts as missing
                    go_left = v in codes if v >= 0 else missing_left[node]
                node = left[node] if go_left else right[node]
            total += leaf_value[node]
        return total

    def row_variants(self, row: Mapping[str, Any], changes: Sequence[Change]) -> list[float]:
        """`row` of each variant of `row`, re-walking only the trees whose path reads the changed
        input.

        Every other tree gives the row's own leaf, and the sum runs in `row`'s order, so each
        variant's raw score is the one `row` gives for the changed mapping, to the last bit: a
        change no path reads scores exactly as the row.
        """
        x = self._inputs_of(row)
        reached = [self._leaf(root, x) for root in self.roots]
        leaves = [self.value[leaf] for leaf, _ in reached]
        # reduce(add) adds in order, as row's loop does, at C speed (sum() may compensate).
        base = functools.reduce(operator.add, leaves, self.baseline)
        readers: dict[int, list[int]] = {}  # input -> the trees whose path reads it
        for t, (_, reads) in enumerate(reached):
            while reads:
                low = reads & -reads
                readers.setdefault(low.bit_length() - 1, []).append(t)
                reads ^= low
        position = self._positions
        scores = []
        for name, changed in changes:
            j = position.get(name)
            touched = readers.get(j, []) if j is not None else []
            if not touched:
                scores.append(base)
                continue
            assert j is not None
            moved = list(x)
            moved[j] = self._input(self.inputs[j], changed)
            values = list(leaves)
            for t in touched:
                values[t] = self.value[self._leaf(self.roots[t], moved)[0]]
            scores.append(functools.reduce(operator.add, values, self.baseline))
        return scores

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {item.name: j for j, item in enumerate(self.inputs)}

    @staticmethod
    def _input(item: _TreeInput, value: Any) -> float:
        if item.codes is not None:
            return item.codes.of(value)
        return NAN if value is None else float(value)

    def _inputs_of(self, row: Mapping[str, Any]) -> list[float]:
        return [self._input(item, row[item.name]) for item in self.inputs]

    def _leaf(self, node: int, x: Sequence[float]) -> tuple[int, int]:
        """The leaf one tree gives `x`, from its root `node`, and its path's inputs as a bitmask."""
        feature, threshold, missing_left = self.feature, self.threshold, self.missing_left
        left_codes, left, right = self.left_codes, self.left, self.right
        reads = 0
        while (f := feature[node]) >= 0:
            reads |= 1 << f
            v = x[f]
            codes = left_codes[node]
            if v != v:
                go_left = missing_left[node]
            elif codes is None:
                go_left = v <= threshold[node]
            else:  # a negative code counts as missing
                go_left = v in codes if v >= 0 else missing_left[node]
            node = left[node] if go_left else right[node]
        return node, reads

    def columns(self, columns: Columns, n_rows: int) -> FloatArray:
        X = self._matrix(columns, n_rows)
        # As HistGradientBoostingClassifier._raw_predict: baseline, then each tree in turn. One
        # OpenMP thread: with two, single-row predictions stalled now and then on 2-core nodes.
        raw = np.zeros(n_rows) + self.baseline
        for predictor in self.predictors:
            raw += self._leaves(predictor, X)
        return raw

    def variants(self, columns: Columns, n_rows: int, variants: Sequence[Variant]) -> FloatArray:
        """The raw score of each variant, re-walking a tree only for the rows whose path in it
        splits on the variant's feature.

        Any other row follows its own path, and reaches its own leaf, in that tree. So each
        variant's sum takes the same leaves in the same order as `columns` on the variant rows
        would, and gives the same number.

        Returns:
            The variants' raw scores, concatenated in the order of `variants`.
        """
        X = self._matrix(columns, n_rows)
        reached = np.empty((len(self.paths), n_rows), dtype=np.intp)
        leaves = np.empty((len(self.paths), n_rows))
        for t, paths in enumerate(self.paths):
            reached[t] = self._leaves(paths.leaf_ids, X).astype(np.intp)
            leaves[t] = paths.values[reached[t]]
        scores = [
            self._variant_group(X, reached, leaves, group)
            for group in _groups(variants, _VARIANT_CELLS // max(1, len(self.paths)))
        ]
        return np.concatenate(scores) if scores else np.empty(0)

    def _variant_group(
        self,
        X: FloatArray,
        reached: np.ndarray,
        leaves: FloatArray,
        variants: Sequence[Variant],
    ) -> FloatArray:
        """`variants` for a few variants at once: one walk of each tree for all of them.

        `reached` and `leaves` are each row's leaf and its value, per tree.
        """
        position = {item.name: j for j, item in enumerate(self.inputs)}
        rows = np.concatenate([np.asarray(v.rows, dtype=np.intp) for v in variants])
        # One contiguous row per input: a tree re-walks its hit rows on its own inputs only.
        X_variants = np.take(X.T, rows, axis=1)
        moved: list[tuple[int, int, int]] = []  # (first, end, input) of each variant read at all
        start = 0
        for variant in variants:
            end = start + len(variant.rows)
            j = position.get(variant.feature)
            if j is not None:  # else the trees never read it: the variant scores as its row
                item = self.inputs[j]
                if item.codes is not None:
                    code = item.codes.of(variant.value)
                else:
                    code = NAN if variant.value is None else float(variant.value)
                X_variants[j, start:end] = code
                moved.append((start, end, j))
            start = end
        raw = np.zeros(len(rows)) + self.baseline
        for t, paths in enumerate(self.paths):
            tree_leaves = leaves[t].take(rows)
            hits = [
                first + np.flatnonzero(paths.reads[j].take(reached[t].take(rows[first:end])))
                for first, end, j in moved
                if paths.reads_input[j]
            ]
            hit = np.concatenate(hits) if hits else np.empty(0, dtype=np.intp)
            if len(hit):
                on_inputs = np.empty((len(paths.inputs), len(hit)))
                for k, j in enumerate(paths.inputs):
                    np.take(X_variants[j], hit, out=on_inputs[k])
                tree_leaves[hit] = paths.on_inputs.predict(
                    on_inputs.T, self.known_cat_bitsets, paths.f_idx_map, 1
                )
            raw += tree_leaves
        return raw

    def _matrix(self, columns: Columns, n_rows: int) -> FloatArray:
        """The trees' input, one column per `inputs` item."""
        X = np.empty((n_rows, len(self.inputs)))
        for j, item in enumerate(self.inputs):
            X[:, j] = (
                columns.number(item.name) if item.codes is None else columns.category(item.codes)
            )
        return X

    def _leaves(self, predictor: Any, X: FloatArray) -> FloatArray:
        """One tree's leaf value per row of `X`."""
        return np.asarray(
            predictor.predict(X, self.known_cat_bitsets, self.f_idx_map, 1), dtype=np.float64
        )


def _groups(variants: Sequence[Variant], most_rows: int) -> list[list[Variant]]:
    """`variants` in order, in groups of at most `most_rows` rows (or one variant)."""
    groups: list[list[Variant]] = []
    size = most_rows
    for variant in variants:
        if size + len(variant.rows) > most_rows:
            groups.append([])
            size = 0
        groups[-1].append(variant)
        size += len(variant.rows)
    return groups


@dataclass(frozen=True)
class _LeafPaths:
    """One tree's leaves as `variants` needs them."""

    leaf_ids: Any
    """The tree as a TreePredictor whose leaves hold their own node index."""
    values: FloatArray
    """Each node's value; a leaf's is what the tree predicts."""
    reads: np.ndarray
    """(inputs, nodes): whether the path from the root to a node splits on an input."""
    reads_input: np.ndarray
    """(inputs,): whether any split of the tree reads an input."""
    inputs: np.ndarray
    """The inputs the tree splits on."""
    on_inputs: Any
    """The tree as a TreePredictor that reads `inputs` alone: its split k reads column k."""
    f_idx_map: np.ndarray
    """`Forest.f_idx_map` for `on_inputs`."""


def _leaf_paths(predictor: Any, n_inputs: int, f_idx_map: np.ndarray) -> _LeafPaths:
    nodes = predictor.nodes
    reads = np.zeros((len(nodes), n_inputs), dtype=bool)
    stack = [0]  # the root
    while stack:
        node = stack.pop()
        if not nodes["is_leaf"][node]:
            for child in (int(nodes["left"][node]), int(nodes["right"][node])):
                reads[child] = reads[node]
                reads[child, nodes["feature_idx"][node]] = True
                stack.append(child)
    numbered = nodes.copy()
    numbered["value"] = np.arange(len(nodes))
    leaf_ids = type(predictor)(
        numbered, predictor.binned_left_cat_bitsets, predictor.raw_left_cat_bitsets
    )
    values = np.asarray(nodes["value"], dtype=np.float64)
    reads_input = reads.any(axis=0)
    inputs = np.flatnonzero(reads_input)
    column = np.zeros(n_inputs, dtype=nodes.dtype["feature_idx"])
    column[inputs] = np.arange(len(inputs))
    renumbered = nodes.copy()
    renumbered["feature_idx"] = column[nodes["feature_idx"]]
    on_inputs = type(predictor)(
        renumbered, predictor.binned_left_cat_bitsets, predictor.raw_left_cat_bitsets
    )
    return _LeafPaths(
        leaf_ids=leaf_ids,
        values=values,
        reads=np.ascontiguousarray(reads.T),
        reads_input=np.asarray(reads_input),
        inputs=inputs,
        on_inputs=on_inputs,
        f_idx_map=np.ascontiguousarray(f_idx_map[inputs]),
    )


@dataclass(frozen=True)
class _Ordinal:
    """What one OrdinalEncoder column does to a value."""

    codes: dict[Any, float]
    """Known categories; None among them when seen in training, as an ordinary category."""
    unknown: float
    nan: float
    """Only NaN counts as missing: `encoded_missing_value` when seen in training, else unknown."""

    def of(self, value: Any) -> float:
        if is_nan(value):
            return self.nan
        return self.codes.get(value, self.unknown)


def _ordinals(encoder: Any) -> list[_Ordinal]:
    if not isinstance(encoder, OrdinalEncoder):
        raise UnsupportedModelError(f"cannot compile {encoder!r} as a category encoder for trees")
    if encoder.handle_unknown != "use_encoded_value":
        raise UnsupportedModelError(f"cannot compile {encoder!r}: unknown values would raise")
    if encoder.min_frequency is not None or encoder.max_categories is not None:
        raise UnsupportedModelError(f"cannot compile {encoder!r}: infrequent grouping")
    unknown = float(encoder.unknown_value)
    encoded_missing = float(encoder.encoded_missing_value)
    columns = []
    for categories in encoder.categories_:
        codes: dict[Any, float] = {}
        nan = unknown
        for code, category in enumerate(categories):
            if is_nan(category):
                nan = encoded_missing
            else:
                codes[category] = float(code)
        columns.append(_Ordinal(codes, unknown, nan))
    return columns


def _outer_inputs(blocks: list[Block], n_features: int) -> list[_TreeInput]:
    """The pipeline's ColumnTransformer output, column by column: numbers and ordinal codes."""
    inputs: list[_TreeInput | None] = [None] * n_features
    for block in blocks:
        positions = range(n_features)[block.output]
        if len(positions) != len(block.columns):
            raise UnsupportedModelError(f"{block.transformer!r} changes the number of columns")
        steps = [step for step in transformer_steps(block.transformer) if not is_identity(step)]
        if not steps:
            for position, name in zip(positions, block.columns, strict=True):
                inputs[position] = _TreeInput(name, None)
        elif len(steps) == 1:
            ordinals = _ordinals(steps[0])
            for position, name, ordinal in zip(positions, block.columns, ordinals, strict=True):
                values = {c: code for c, code in ordinal.codes.items() if c is not None}
                if not all(isinstance(c, str) for c in values):
                    raise UnsupportedModelError(f"{name!r} has a non-string category")
                # to_frame hands the encoder None for a missing category, never NaN.
                table = CategoryTable(name, values, ordinal.unknown, ordinal.of(None))
                inputs[position] = _TreeInput(name, table)
        else:
            raise UnsupportedModelError(f"cannot compile {block.transformer!r} before trees")
    if any(item is None for item in inputs):
        raise UnsupportedModelError("the column transformer leaves output columns unexplained")
    return [item for item in inputs if item is not None]


def _is_check_array(step: Any) -> bool:
    func = getattr(step, "func", None)
    return isinstance(func, functools.partial) and func.func is check_array


def _inner_inputs(
    classifier: HistGradientBoostingClassifier, outer: list[_TreeInput]
) -> list[_TreeInput]:
    """The trees' input order and codes, through the classifier's own preprocessing.

    With `categorical_features` set, scikit-learn 1.9 puts the categorical columns first and
    ordinal-encodes them again (our codes become its categories), in `_preprocessor`.
    """
    inner = classifier._preprocessor
    if inner is None:
        return outer
    inputs: list[_TreeInput | None] = [None] * len(outer)
    for name, transformer, mask in inner.transformers_:
        selected = np.arange(len(outer))[mask]
        if (isinstance(transformer, str) and transformer == "drop") or len(selected) == 0:
            continue
        positions = range(len(outer))[inner.output_indices_[name]]
        if _is_check_array(transformer):
            for position, j in zip(positions, selected, strict=True):
                inputs[position] = outer[j]
            continue
        for position, j, ordinal in zip(positions, selected, _ordinals(transformer), strict=True):
            item = outer[j]
            if item.codes is None:
                raise UnsupportedModelError(f"{item.name!r} is a number coded as a category")
            table = CategoryTable(
                item.name,
                {value: ordinal.of(code) for value, code in item.codes.values.items()},
                ordinal.of(item.codes.unknown),
                ordinal.of(item.codes.missing),
            )
            inputs[position] = _TreeInput(item.name, table)
    if any(item is None for item in inputs):
        raise UnsupportedModelError("the classifier's own preprocessing is not understood")
    return [item for item in inputs if item is not None]


def _in_bitset(bitset: Any, value: int) -> bool:
    return bool((int(bitset[value >> 5]) >> (value & 31)) & 1)


def compile_forest(blocks: list[Block], classifier: HistGradientBoostingClassifier) -> Forest:
    if len(classifier.classes_) != 2 or classifier.n_trees_per_iteration_ != 1:
        raise UnsupportedModelError("only a binary HistGradientBoostingClassifier is supported")
    outer = _outer_inputs(blocks, classifier.n_features_in_)
    inputs = _inner_inputs(classifier, outer)
    known_cat_bitsets, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()

    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    missing_left: list[bool] = []
    left_codes: list[frozenset[int] | None] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    predictors = []
    for (predictor,) in classifier._predictors:
        predictors.append(predictor)
        offset = len(feature)
        roots.append(offset)
        for node in predictor.nodes:
            is_leaf, f = bool(node["is_leaf"]), int(node["feature_idx"])
            goes_left = bool(node["missing_go_to_left"])
            feature.append(-1 if is_leaf else f)
            threshold.append(float(node["num_threshold"]))
            missing_left.append(goes_left)
            left.append(int(node["left"]) + offset)
            right.append(int(node["right"]) + offset)
            value.append(float(node["value"]))
            if is_leaf or not node["is_categorical"]:
                left_codes.append(None)
                continue
            # Left: in the split's bitset; right: another known category; else as missing.
            split = predictor.raw_left_cat_bitsets[node["bitset_idx"]]
            known = known_cat_bitsets[f_idx_map[f]]
            left_codes.append(
                frozenset(
                    code
                    for code in range(256)
                    if _in_bitset(split, code) or (goes_left and not _in_bitset(known, code))
                )
            )
    baseline = np.asarray(classifier._baseline_prediction, dtype=np.float64)
    if baseline.size != 1:
        raise UnsupportedModelError("expected one baseline for a binary classifier")
    return Forest(
        inputs=tuple(inputs),
        baseline=float(baseline.ravel()[0]),
        roots=tuple(roots),
        feature=feature,
        threshold=threshold,
        missing_left=missing_left,
        left_codes=left_codes,
        left=left,
        right=right,
        value=value,
        predictors=tuple(predictors),
        known_cat_bitsets=known_cat_bitsets,
        f_idx_map=f_idx_map,
        paths=tuple(_leaf_paths(predictor, len(inputs), f_idx_map) for predictor in predictors),
    )
