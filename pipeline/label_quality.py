"""How far a model can be trusted against a retailer's label, and the verdict it gives on one.

A model export may carry ``label_quality.json``, learned from the out-of-fold predictions of its
cross-validation (:mod:`models.label_quality`): per head, each class's **threshold** (the mean
calibrated probability the model gives that class on held-out examples of it: confident
learning's per-class self-confidence, Northcutt et al. 2021), the **confusable** pairs of
categories the model mixes up on held-out data, a **decision** threshold for a binary head's
minority class (KIDS), and for gender the categories in which the gender head is **reliable**.
:class:`HeadQuality` is one head's part, read by :class:`~pipeline.model_info.ModelInfo`.

:meth:`Judge.judge` compares one product's retailer label with the model's calibrated
probabilities:

* the probability that the retailer's label is **compatible** with the product: the model's
  probability of that class, plus its ancestors' and descendants' in the hierarchy (a retailer
  saying JEANS is right about SKINNY_JEANS); for gender, MALE and FEMALE are each compatible
  with UNISEX (a unisex product is right for either, and a retailer may sell either as unisex);
* the **estimated probability that the retailer's label is wrong**, by Bayes' rule: a retailer
  label is right with prior probability ``1 - error_rate`` and otherwise names any of the
  classes it is not compatible with alike, so
  ``odds(wrong) = (1 - p_r) / p_r * error_rate / ((1 - error_rate) * others)`` where ``p_r``
  is the compatible probability and ``others`` the number of incompatible classes; the model's
  small probabilities are not calibrated as its top ones are, so the log-odds are recalibrated
  per head as ``a + b * log-odds`` (``calibration``, fitted on held-out predictions);
* the **verdict**: AGREE; PARENT_CHILD / SAME_BRANCH (compatible labels: one is the other's
  ancestor, or for gender UNISEX against MALE or FEMALE; never a label error); CONFUSABLE (a
  pair the model itself mixes up: a lower verdict); DISAGREE (``p_r`` is under the retailer
  class's threshold: less than the model gives, on average, to held-out products truly of that
  class: confident learning's per-class test); WEAK_DISAGREE (the labels differ, but the
  retailer's label is as likely as its class usually is); NOT_ASSESSED (gender in a category
  where the gender head is not reliable); OUT_OF_VOCABULARY (no class of the model is
  compatible with the retailer's label); RETAILER_MISSING; MODEL_UNCERTAIN (the model's label
  is null, under ``--min-*-confidence``).

Only DISAGREE and CONFUSABLE can flag a product (:mod:`pipeline.product_rules`), and only with an
estimated error probability at or over the field's review threshold.
"""

from __future__ import annotations

import enum
import functools
import json
from dataclasses import dataclass, field

import numpy as np

from schemas.taxonomy import Relation, Taxonomy

FILE = "label_quality.json"  # beside model_card.json in an export
DEFAULT_THRESHOLD = 0.5  # a class's threshold when the export carries none
DEFAULT_ERROR_RATE = 0.05  # prior share of wrong retailer labels, per field (--label-error-rate)
# Labels right about other classes too, outside the hierarchy: a unisex product is right for either
# gender, and either gender's product may be sold as unisex; only MALE against FEMALE is a dispute.
ALSO_RIGHT_ABOUT = {"MALE": ("UNISEX",), "FEMALE": ("UNISEX",), "UNISEX": ("MALE", "FEMALE")}


class Verdict(enum.StrEnum):
    """The retailer's label against the model's (products.<field>_agreement)."""

    AGREE = "AGREE"
    PARENT_CHILD = "PARENT_CHILD"
    SAME_BRANCH = "SAME_BRANCH"
    CONFUSABLE = "CONFUSABLE"
    DISAGREE = "DISAGREE"
    WEAK_DISAGREE = "WEAK_DISAGREE"
    NOT_ASSESSED = "NOT_ASSESSED"
    OUT_OF_VOCABULARY = "OUT_OF_VOCABULARY"
    RETAILER_MISSING = "RETAILER_MISSING"
    MODEL_UNCERTAIN = "MODEL_UNCERTAIN"


FLAGGABLE = (Verdict.DISAGREE.value, Verdict.CONFUSABLE.value)  # the verdicts that can put a product in review
COMPARED = ("AGREE", "PARENT_CHILD", "SAME_BRANCH", "CONFUSABLE", "DISAGREE", "WEAK_DISAGREE")


@dataclass(frozen=True)
class HeadQuality:
    """One head's reliability, learned from out-of-fold predictions (see the module docstring)."""

    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    confusable: tuple[tuple[str, str], ...] = ()  # sorted pairs
    decision: tuple[tuple[str, float], ...] = ()  # (class, probability from which it is the model's label)
    # gender head: (category node, held-out examples, gender accuracy) per node where it is reliable
    reliable_categories: tuple[tuple[str, int, float], ...] | None = None
    # (label or "*", a, b): the Bayes log-odds that the label is wrong, recalibrated as
    # a + b * log-odds (Platt scaling fitted on held-out predictions with simulated wrong labels;
    # "*" for labels without a pair of their own); none: as computed.
    calibration: tuple[tuple[str, float, float], ...] = ()
    learned_from: str = ""

    def __post_init__(self):
        if len(self.thresholds) != len(self.classes):
            raise ValueError("one threshold per class is required")

    def threshold(self, label: str) -> float:
        return self._thresholds.get(label, DEFAULT_THRESHOLD)

    def error_scaling(self, label: str) -> tuple[float, float]:
        """(a, b) recalibrating the log-odds that ``label`` is wrong: its own, else the overall."""
        return self._scaling.get(label, self._scaling.get("*", (0.0, 1.0)))

    def is_confusable(self, a: str, b: str) -> bool:
        return tuple(sorted((a, b))) in self._pairs

    # Lookups made once per instance (a frozen dataclass's cached_property lives in its __dict__).
    @functools.cached_property
    def _thresholds(self) -> dict[str, float]:
        return dict(zip(self.classes, self.thresholds))

    @functools.cached_property
    def _scaling(self) -> dict[str, tuple[float, float]]:
        return {name: (a, b) for name, a, b in self.calibration}

    @functools.cached_property
    def _pairs(self) -> frozenset:
        return frozenset(self.confusable)

    def to_dict(self) -> dict:
        out = {"classes": list(self.classes), "thresholds": [round(t, 4) for t in self.thresholds],
               "confusable": [list(p) for p in self.confusable], "decision": dict(self.decision),
               "error_calibration": {label: [a, b] for label, a, b in self.calibration},
               "learned_from": self.learned_from}
        if self.reliable_categories is not None:
            out["reliable_categories"] = {c: {"examples": n, "accuracy": round(a, 4)}
                                          for c, n, a in self.reliable_categories}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> HeadQuality:
        reliable = data.get("reliable_categories")
        return cls(classes=tuple(data["classes"]), thresholds=tuple(float(t) for t in data["thresholds"]),
                   confusable=tuple(tuple(sorted(p)) for p in data.get("confusable", ())),
                   decision=tuple((c, float(v)) for c, v in (data.get("decision") or {}).items()),
                   reliable_categories=None if reliable is None else tuple(
                       (c, int(v["examples"]), float(v["accuracy"])) for c, v in reliable.items()),
                   calibration=tuple(sorted((label, float(a), float(b))
                                            for label, (a, b) in (data.get("error_calibration") or {}).items())),
                   learned_from=data.get("learned_from", ""))


def read_heads(text: str) -> dict[str, HeadQuality]:
    """task -> HeadQuality from the text of a ``label_quality.json``."""
    return {task: HeadQuality.from_dict(head) for task, head in json.loads(text)["heads"].items()}


def write_heads(heads: dict[str, HeadQuality], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"heads": {task: h.to_dict() for task, h in heads.items()}}, fh, indent=1, sort_keys=True)


@dataclass(frozen=True)
class Judgement:
    verdict: str
    model_label: str | None
    error_probability: float | None = None  # that the retailer's label is wrong; None: no label or no estimate


@dataclass(frozen=True)
class Judge:
    """Judges one field (category, gender or age group) of products against one head."""

    classes: tuple[str, ...]
    quality: HeadQuality | None = None
    taxonomy: Taxonomy | None = None  # category: labels related in the hierarchy are compatible
    _compatible: dict = field(default_factory=dict, compare=False, repr=False)

    def model_label(self, probs: np.ndarray) -> str:
        """The argmax, unless a decision threshold names a class whose probability reaches it."""
        for label, minimum in (self.quality.decision if self.quality else ()):
            if label in self.classes and probs[self.classes.index(label)] >= minimum:
                return label
        return self.classes[int(np.argmax(probs))]

    def compatible(self, label: str) -> np.ndarray:
        """Indices of the classes a retailer's ``label`` is right about."""
        found = self._compatible.get(label)
        if found is None:
            if self.taxonomy is not None and label in self.taxonomy:
                related = [i for i, c in enumerate(self.classes) if c in self.taxonomy
                           and self.taxonomy.relation(label, c) != Relation.UNRELATED]
            else:
                related = [i for i, c in enumerate(self.classes) if c in (label, *ALSO_RIGHT_ABOUT.get(label, ()))]
            found = self._compatible[label] = np.array(related, dtype=int)
        return found

    def error_log_odds(self, probs: np.ndarray, label: str, mass: float | None = None) -> float | None:
        """``log((1 - p_r) / (p_r * others))``: the log-odds that ``label`` is wrong at even prior
        odds, before recalibration (None where no class is compatible with it). ``mass``: p_r,
        when the caller has summed it already."""
        compatible = self.compatible(label)
        if not len(compatible) or len(self.classes) < 2:
            return None
        p = float(np.clip(probs[compatible].sum() if mass is None else mass, 1e-9, 1.0 - 1e-9))
        return float(np.log((1.0 - p) / (p * max(len(self.classes) - len(compatible), 1))))

    def error_probability(self, probs: np.ndarray, label: str, error_rate: float = DEFAULT_ERROR_RATE,
                          mass: float | None = None) -> float | None:
        """The posterior probability that the retailer's ``label`` is wrong, given the prior
        ``error_rate`` (module docstring); ``mass`` as for :meth:`error_log_odds`."""
        x = self.error_log_odds(probs, label, mass)
        if x is None:
            return None
        a, b = self.quality.error_scaling(label) if self.quality else (0.0, 1.0)
        z = a + b * x + np.log(error_rate / (1.0 - error_rate))
        return round(float(1.0 / (1.0 + np.exp(-z))), 4)

    def agree(self, a: str, b: str) -> bool:
        """Whether two labels are right about each other (equal, related in the hierarchy, or
        UNISEX and a gender)."""
        if self.taxonomy is not None and a in self.taxonomy and b in self.taxonomy:
            return self.taxonomy.relation(a, b) != Relation.UNRELATED
        return a == b or b in ALSO_RIGHT_ABOUT.get(a, ())

    def with_witness(self, probs: np.ndarray, label: str | None, error_rate: float, *,
                     retailer: str | None = None, copied: float = 0.0) -> np.ndarray:
        """``probs`` updated by a witness of the product's class (e.g. its title) that names
        ``label`` and is wrong with probability ``error_rate``, naming then any class it is not
        compatible with alike (Bayes' rule); unchanged without a usable label. ``copied``: the
        chance that the witness merely repeats the ``retailer``'s label (a title written from the
        same data as the field): a witness agreeing with the retailer then counts for less, one
        contradicting it in full."""
        compatible = self.compatible(label) if label else ()
        if not len(compatible) or len(compatible) == len(self.classes):
            return probs
        likelihood = np.full(len(self.classes), error_rate / (len(self.classes) - len(compatible)))
        likelihood[compatible] = 1.0 - error_rate
        if retailer is not None and copied and self.agree(retailer, label):
            likelihood = copied + (1.0 - copied) * likelihood
        updated = probs * likelihood
        return updated / updated.sum()

    def judge(self, probs: np.ndarray | None, retailer: str | None, *, model: str | None = None,
              assessed: bool = True, error_rate: float = DEFAULT_ERROR_RATE) -> Judgement:
        """The verdict on ``retailer`` (the retailer's mapped label) given the product's calibrated
        class probabilities ``probs`` (summing to 1). ``model``: the product's label when the caller
        decided it (None where it is under the minimum confidence); ``assessed``: False where the
        head is not reliable for this product (NOT_ASSESSED); ``error_rate``: the prior share of
        wrong retailer labels."""
        if probs is None:
            return Judgement(Verdict.RETAILER_MISSING.value if retailer is None else Verdict.MODEL_UNCERTAIN.value,
                             None)
        if retailer is None:
            return Judgement(Verdict.RETAILER_MISSING.value, model)
        if model is None:
            return Judgement(Verdict.MODEL_UNCERTAIN.value, None)
        p_retailer = float(probs[self.compatible(retailer)].sum())
        wrong = self.error_probability(probs, retailer, error_rate, p_retailer)
        if retailer == model:
            return Judgement(Verdict.AGREE.value, model, wrong)
        if self.taxonomy is not None and retailer in self.taxonomy and model in self.taxonomy:
            relation = self.taxonomy.relation(retailer, model)
            if relation in (Relation.PARENT, Relation.CHILD):
                return Judgement(Verdict.PARENT_CHILD.value, model, wrong)
            if relation in (Relation.ANCESTOR, Relation.DESCENDANT):
                return Judgement(Verdict.SAME_BRANCH.value, model, wrong)
        elif model in ALSO_RIGHT_ABOUT.get(retailer, ()):
            return Judgement(Verdict.PARENT_CHILD.value, model, wrong)
        if wrong is None:
            return Judgement(Verdict.OUT_OF_VOCABULARY.value, model)
        if not assessed:
            return Judgement(Verdict.NOT_ASSESSED.value, model, wrong)
        if self.quality is not None and self.quality.is_confusable(retailer, model):
            return Judgement(Verdict.CONFUSABLE.value, model, wrong)
        threshold = self.quality.threshold(retailer) if self.quality else DEFAULT_THRESHOLD
        if p_retailer < threshold:
            return Judgement(Verdict.DISAGREE.value, model, wrong)
        return Judgement(Verdict.WEAK_DISAGREE.value, model, wrong)
