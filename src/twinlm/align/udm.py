"""UDM (underlying distribution matching) for BCO, when desirable and undesirable prompts differ.

A class-balanced logistic regression learns p = P(desirable set | prompt embedding); each
undesirable example is weighted by the density ratio p / (1 - p), clipped to
[min_density_ratio, max_density_ratio], which reweights the undesirable prompts towards the
desirable prompts' distribution (BCO paper; ETTIN-FACTS §5). The classifier is stored as plain
tensors (safetensors) plus JSON metadata, never pickled, and applies without scikit-learn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from twinlm.errors import UserError

UDM_FILE = "udm_classifier.safetensors"
Embedder = Callable[[list[str]], np.ndarray]


def sentence_embedder(name_or_path: str, batch_size: int = 32) -> Embedder:
    """Mean-pooled embeddings from a twinlm encoder folder or any sentence-transformers model."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(name_or_path), device="cpu")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the UDM embedding model {name_or_path!r}: {str(err).splitlines()[0]}") from None

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True), dtype=np.float64)

    return embed


@dataclass
class UDMClassifier:
    coef: np.ndarray  # (dim,)
    intercept: float
    accuracy: float  # on the prompts it was fitted on
    min_density_ratio: float = 0.5
    max_density_ratio: float = 10.0

    def prob_desirable(self, embeddings: np.ndarray) -> np.ndarray:
        z = np.asarray(embeddings, dtype=np.float64) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def weights(self, embeddings: np.ndarray) -> np.ndarray:
        """Clipped density ratios p / (1 - p); computed as exp(logit) so p near 1 does not divide by 0."""
        z = np.asarray(embeddings, dtype=np.float64) @ self.coef + self.intercept
        return np.clip(np.exp(np.clip(z, -50, 50)), self.min_density_ratio, self.max_density_ratio)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / UDM_FILE
        meta = {"accuracy": self.accuracy, "min_density_ratio": self.min_density_ratio,
                "max_density_ratio": self.max_density_ratio}
        save_file({"coef": self.coef.astype(np.float64), "intercept": np.array([self.intercept])},
                  str(path), metadata={"udm": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> UDMClassifier:
        from safetensors import safe_open

        path = Path(folder) / UDM_FILE
        if not path.exists():
            raise UserError(f"{folder} has no UDM classifier ({UDM_FILE}); it was not trained with UDM")
        tensors = load_file(str(path))
        with safe_open(str(path), "np") as f:
            meta = json.loads(f.metadata()["udm"])
        return cls(coef=tensors["coef"], intercept=float(tensors["intercept"][0]), **meta)


def fit_udm(
    desirable_prompts: Sequence[str],
    undesirable_prompts: Sequence[str],
    embed: Embedder,
    sample_size: int = 1024,
    min_density_ratio: float = 0.5,
    max_density_ratio: float = 10.0,
    seed: int = 0,
) -> UDMClassifier:
    """Fit the balanced "is this a desirable-set prompt" classifier on up to `sample_size` prompts per class."""
    from sklearn.linear_model import LogisticRegression

    if not desirable_prompts or not undesirable_prompts:
        raise UserError("UDM needs prompts of both classes (desirable and undesirable) to fit its classifier")
    rng = random.Random(seed)
    pos = rng.sample(list(desirable_prompts), min(sample_size, len(desirable_prompts)))
    neg = rng.sample(list(undesirable_prompts), min(sample_size, len(undesirable_prompts)))
    x = np.concatenate([embed(pos), embed(neg)])
    y = np.array([1] * len(pos) + [0] * len(neg))
    # Balanced class weights: the ratio must reflect the prompt distributions, not the class sizes.
    clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x, y)
    return UDMClassifier(
        coef=clf.coef_[0].astype(np.float64), intercept=float(clf.intercept_[0]),
        accuracy=float(clf.score(x, y)), min_density_ratio=min_density_ratio, max_density_ratio=max_density_ratio,
    )
