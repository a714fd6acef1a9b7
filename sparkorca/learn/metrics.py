"""Orca's metrics (``bigdl.orca.learn.metrics``), computed exactly over all workers.

A metric accumulates *sufficient statistics* (counts and sums), never a per-worker
average: workers' (or partitions') states are summed, or for AUC concatenated, and
the value is computed once from the total. Orca averaged per-worker values, which is
wrong when shards differ in size; the names and definitions are Orca's.

Pure numpy: used by the training workers, by the evaluate tasks on the executors
and on the driver, whatever the framework.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Union

import numpy as np

from ..errors import InvalidArgumentError

State = Dict[str, np.ndarray]


class Metric:
    """One metric's accumulator. ``update`` takes a batch's predictions and targets
    (numpy), ``state`` / ``merge`` move it between processes, ``compute`` gives the
    value. Subclasses say which state keys are concatenated (``concat``) rather
    than summed."""

    concat: Sequence[str] = ()

    def __init__(self) -> None:
        self.reset()

    def get_name(self) -> str:
        return type(self).__name__

    def reset(self) -> None:
        self._state: State = {}

    def _add(self, **parts) -> None:
        for k, v in parts.items():
            self._state[k] = self._state.get(k, np.zeros(())) + np.asarray(v, np.float64)

    def _append(self, **parts: np.ndarray) -> None:
        for k, v in parts.items():
            v = np.asarray(v, np.float64).reshape(-1)
            self._state[k] = np.concatenate([self._state[k], v]) if k in self._state else v

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def state(self) -> State:
        return dict(self._state)

    def merge(self, states: Sequence[State]) -> None:
        """Add other accumulators' states (another worker's, another partition's)."""
        for st in states:
            for k, v in st.items():
                if k in self.concat:
                    self._append(**{k: v})
                else:
                    self._add(**{k: v})

    def compute(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.get_name()}()"


def _ratio(num, den) -> float:
    den = float(den)
    return float(num) / den if den else float("nan")


class _Fraction(Metric):
    """A share of correct predictions: ``correct / total`` over every batch."""

    def compute(self):
        return _ratio(self._state.get("correct", 0), self._state.get("total", 0))


def _labels(pred: np.ndarray, target: np.ndarray):
    """Orca's Accuracy: class scores -> argmax; probabilities of one class -> >= 0.5."""
    if pred.ndim == target.ndim + 1:
        pred = pred.argmax(axis=-1)
    elif np.issubdtype(pred.dtype, np.floating):
        pred = (pred >= 0.5).astype(np.int64)
    return pred.reshape(target.shape), target


class Accuracy(_Fraction):
    """Correct / all. Scores of several classes are argmax-ed; one probability is
    read as class 1 when >= 0.5 (Orca's rule)."""

    def __init__(self, zero_based_label: bool = True):
        if not zero_based_label:
            raise InvalidArgumentError("zero_based_label", zero_based_label, "True",
                                       hint="labels are 0-based class indices")
        super().__init__()

    def update(self, pred, target):
        p, t = _labels(pred, target)
        self._add(correct=np.sum(p == t), total=t.size)



class SparseCategoricalAccuracy(_Fraction):
    def update(self, pred, target):
        if target.ndim == pred.ndim:
            target = target.reshape(target.shape[:-1])
        self._add(correct=np.sum(pred.argmax(axis=-1) == target), total=target.size)



class CategoricalAccuracy(_Fraction):
    def update(self, pred, target):
        self._add(correct=np.sum(pred.argmax(axis=-1) == target.argmax(axis=-1)),
                  total=target.shape[0])



class BinaryAccuracy(_Fraction):
    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        super().__init__()

    def update(self, pred, target):
        p = (pred.reshape(target.shape) > self.threshold).astype(target.dtype)
        self._add(correct=np.sum(p == target), total=target.size)



class Top5Accuracy(_Fraction):
    def update(self, pred, target):
        top = np.argsort(-pred, axis=-1)[..., :5]
        t = target.reshape(-1, 1)
        self._add(correct=np.sum(np.any(top.reshape(len(t), -1) == t, axis=1)), total=len(t))



class _MeanError(Metric):
    """The mean of ``error(pred - target)`` over all elements."""

    error: Callable = staticmethod(np.abs)

    def update(self, pred, target):
        d = pred.reshape(target.shape).astype(np.float64) - target
        self._add(err=self.error(d).sum(), total=d.size)

    def compute(self):
        return _ratio(self._state.get("err", 0), self._state.get("total", 0))


class MAE(_MeanError):
    """Mean absolute error over all elements."""


class MSE(_MeanError):
    """Mean squared error over all elements."""

    error = staticmethod(np.square)


def _binary(pred, target, threshold=0.5):
    p = pred.reshape(-1)
    if pred.ndim == target.ndim + 1 and pred.shape[-1] == 2:
        p = pred[..., 1].reshape(-1)  # scores of two classes: class 1's
    return p >= threshold, target.reshape(-1) > 0.5


class _Confusion(Metric):
    """Binary true positives, false positives and false negatives (>= 0.5: positive)."""

    def update(self, pred, target):
        p, t = _binary(pred, target)
        self._add(tp=np.sum(p & t), fp=np.sum(p & ~t), fn=np.sum(~p & t))

    def _count(self, key: str) -> float:
        return float(self._state.get(key, 0))


class Precision(_Confusion):
    def compute(self):
        return _ratio(self._count("tp"), self._count("tp") + self._count("fp"))


class Recall(_Confusion):
    def compute(self):
        return _ratio(self._count("tp"), self._count("tp") + self._count("fn"))


class F1Score(_Confusion):
    def compute(self):
        tp = self._count("tp")
        return _ratio(2 * tp, 2 * tp + self._count("fp") + self._count("fn"))


class AUC(Metric):
    """Binary ROC AUC, exact: every worker's scores and labels are gathered, ties
    count one half (the Mann-Whitney statistic)."""

    concat = ("score", "label")

    def __init__(self, threshold_num: int = 200):
        self.threshold_num = threshold_num  # Orca's BigDL-only argument, accepted
        super().__init__()

    def update(self, pred, target):
        score = pred[..., 1] if pred.ndim == target.ndim + 1 and pred.shape[-1] == 2 else pred
        self._append(score=score.reshape(-1), label=(target.reshape(-1) > 0.5))

    def compute(self):
        score = self._state.get("score", np.zeros(0))
        label = self._state.get("label", np.zeros(0)) > 0.5
        n_pos, n_neg = int(label.sum()), int((~label).sum())
        if not n_pos or not n_neg:
            return float("nan")
        order = np.argsort(score, kind="mergesort")
        s = score[order]
        ranks = np.empty(len(s))
        # average ranks over ties
        _, first, counts = np.unique(s, return_index=True, return_counts=True)
        for f, c in zip(first, counts):
            ranks[f:f + c] = f + (c + 1) / 2.0
        pos_ranks = ranks[label[order]].sum()
        return float((pos_ranks - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class FunctionMetric(Metric):
    """A plain ``f(pred, target) -> number`` named by ``f.__name__``: its per-batch
    values averaged over all samples (weighted by batch size)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        super().__init__()

    def get_name(self) -> str:
        return getattr(self.fn, "__name__", "metric")

    def update(self, pred, target):
        self._add(sum=float(self.fn(pred, target)) * len(target), total=len(target))

    def compute(self):
        return _ratio(self._state.get("sum", 0), self._state.get("total", 0))


MetricArg = Union[None, Metric, Callable, Sequence[Union[Metric, Callable]]]


def resolve(metrics: MetricArg, name: str = "metrics") -> List[Metric]:
    """Orca's ``metrics=`` (one or a list of Metric instances and functions) as fresh
    accumulators; raises naming a bad entry."""
    if metrics is None:
        return []
    items = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    out: List[Metric] = []
    for m in items:
        if isinstance(m, Metric):
            out.append(m)
        elif isinstance(m, type) and issubclass(m, Metric):
            raise InvalidArgumentError(name, m.__name__, "Metric instances, such as Accuracy()",
                                       hint=f"write {m.__name__}()")
        elif callable(m):
            out.append(FunctionMetric(m))
        else:
            raise InvalidArgumentError(name, m, "sparkorca.learn.metrics Metric instances or "
                                       "functions f(pred, target)")
    names = [m.get_name() for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidArgumentError(name, dup, "metrics with distinct names")
    return out


def fresh(metrics: Sequence[Metric]) -> List[Metric]:
    """Empty copies of ``metrics`` (the accumulators of one evaluation)."""
    import copy
    out = [copy.copy(m) for m in metrics]
    for m in out:
        m.reset()
    return out


def states_to_json(metrics: Sequence[Metric]) -> List[dict]:
    return [{k: np.asarray(v).tolist() for k, v in m.state().items()} for m in metrics]


def merge_json(metrics: Sequence[Metric], parts: Sequence[List[dict]]) -> None:
    for i, m in enumerate(metrics):
        m.merge([{k: np.asarray(v) for k, v in part[i].items()} for part in parts])


__all__ = ["Metric", "Accuracy", "SparseCategoricalAccuracy", "CategoricalAccuracy",
           "BinaryAccuracy", "Top5Accuracy", "MAE", "MSE", "Precision", "Recall", "F1Score",
           "AUC", "FunctionMetric", "resolve"]
