"""The router's input features: cheap text features plus (optionally) encoder layers.

`RouterFeaturizer` is an estimator: `fit` looks at training questions *and* the experts'
scores on them (to choose encoder layers by separability of expert success), learns a
standardisation and a PCA, and `transform` applies them. Everything it learns is plain
arrays and JSON-able settings (see `get_state`), so a checkpoint can rebuild it without
pickle.

PCA on the encoder part is there because a few hundred training questions cannot support
a head on 384+ raw dimensions; whitening the kept components puts them on the same scale
as the standardised text features, which matters for the k-NN baseline's distances.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from routing.features.encoder import LayerEncoder
from routing.features.layer_selection import LayerSelection, select_layers
from routing.features.text_features import TEXT_FEATURE_NAMES, text_features



def _f32(a: np.ndarray) -> np.ndarray:
    """Round fitted parameters to float32 at fit time: the checkpoint stores float32, and a
    loaded featurizer must give exactly the features of the one that was saved."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _scale(std: np.ndarray) -> np.ndarray:
    # A constant feature keeps scale 1: dividing by ~0 would turn float rounding into
    # huge values instead of the 0 it should be.
    return np.where(std > 1e-6, std, 1.0)


class RouterFeaturizer:
    """Text features and/or pooled encoder layers, standardised; fit on training data only.

    Parameters are plain values (scikit-learn style). `encoder=None` means text features
    only, which is fast and needs no model. `layers=None` lets `fit` choose `n_layers`
    layers by Fisher separability and effective dimensionality; a list fixes them.
    """

    def __init__(
        self,
        encoder: Optional[str] = None,
        use_text: bool = True,
        max_length: int = 128,
        n_layers: int = 1,
        layers: Optional[Sequence[int]] = None,
        pca_components: Optional[int] = 32,
        success_threshold: float = 0.5,
        pr_weight: float = 0.5,
        cache_dir: Optional[str] = None,
        batch_size: int = 16,
        device: str = "cpu",
    ) -> None:
        self.encoder = encoder
        self.use_text = use_text
        self.max_length = max_length
        self.n_layers = n_layers
        self.layers = layers
        self.pca_components = pca_components
        self.success_threshold = success_threshold
        self.pr_weight = pr_weight
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.device = device
        self._encoder_obj: Optional[LayerEncoder] = None

    # -- helpers -------------------------------------------------------------------
    def _get_encoder(self) -> LayerEncoder:
        if self.encoder is None:
            raise ValueError("this featurizer has no encoder")
        if self._encoder_obj is None:
            self._encoder_obj = LayerEncoder(
                self.encoder, max_length=self.max_length, batch_size=self.batch_size,
                cache_dir=self.cache_dir, device=self.device,
            )
        return self._encoder_obj

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_out_"):
            raise RuntimeError("RouterFeaturizer is not fitted; call fit first")

    # -- estimator API ---------------------------------------------------------------
    def fit(self, questions: Sequence[str], contexts: Sequence[str], f1: np.ndarray) -> "RouterFeaturizer":
        """Learn scalers (and choose layers) from training pairs and their (n, k) expert F1."""
        if not self.use_text and self.encoder is None:
            raise ValueError("nothing to featurize: use_text=False and no encoder")
        f1 = np.asarray(f1, dtype=np.float64)
        if f1.shape[0] != len(questions):
            raise ValueError(f"f1 has {f1.shape[0]} rows for {len(questions)} questions")
        n_out = 0
        if self.use_text:
            T = text_features(questions, contexts)
            self.text_mean_ = _f32(T.mean(axis=0))
            self.text_scale_ = _f32(_scale(T.std(axis=0)))
            n_out += T.shape[1]
        self.layer_selection_: Optional[LayerSelection] = None
        if self.encoder is not None:
            enc = self._get_encoder()
            if self.layers is None:
                all_layers = enc.encode(questions, contexts)
                labels = np.nan_to_num(f1, nan=0.0) >= self.success_threshold
                self.layer_selection_ = select_layers(
                    list(all_layers), labels, n_select=self.n_layers, pr_weight=self.pr_weight
                )
                self.layers_ = list(self.layer_selection_.chosen)
                E = np.concatenate([all_layers[i] for i in self.layers_], axis=1).astype(np.float64)
            else:
                self.layers_ = [int(x) for x in self.layers]
                E = self._encode(questions, contexts)
            self.enc_mean_ = _f32(E.mean(axis=0))
            Ec = E - self.enc_mean_
            r = max(1, min(self.pca_components or Ec.shape[1], Ec.shape[0] - 1, Ec.shape[1]))
            _, s, vt = np.linalg.svd(Ec, full_matrices=False)
            self.enc_components_ = _f32(vt[:r])
            self.enc_scale_ = _f32(_scale(s[:r] / np.sqrt(max(Ec.shape[0] - 1, 1))))
            n_out += r
        self.n_features_out_ = n_out
        return self

    def _encode(self, questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
        arr = self._get_encoder().encode(questions, contexts, layers=self.layers_)
        return np.concatenate(list(arr), axis=1).astype(np.float64)

    def transform(self, questions: Sequence[str], contexts: Sequence[str]) -> np.ndarray:
        """(n, n_features_out_) float32 features."""
        self._check_fitted()
        parts = []
        if self.use_text:
            parts.append((text_features(questions, contexts) - self.text_mean_) / self.text_scale_)
        if self.encoder is not None:
            E = self._encode(questions, contexts) if len(questions) else np.zeros((0, self.enc_mean_.shape[0]))
            if E.shape[1] != self.enc_mean_.shape[0]:
                raise ValueError(
                    f"encoder {self.encoder!r} gives {E.shape[1]} features, the fitted featurizer expects "
                    f"{self.enc_mean_.shape[0]}: is this the encoder it was trained with?"
                )
            parts.append(((E - self.enc_mean_) @ self.enc_components_.T) / self.enc_scale_)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def fit_transform(self, questions: Sequence[str], contexts: Sequence[str], f1: np.ndarray) -> np.ndarray:
        return self.fit(questions, contexts, f1).transform(questions, contexts)

    # -- persistence ---------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able settings and named arrays that `from_state` turns back into this object."""
        self._check_fitted()
        config: dict[str, Any] = {
            "encoder": self.encoder,
            "use_text": self.use_text,
            "max_length": self.max_length,
            "pca_components": self.pca_components,
            "success_threshold": self.success_threshold,
            "text_feature_names": list(TEXT_FEATURE_NAMES) if self.use_text else [],
            "layers": list(getattr(self, "layers_", [])),
            "n_features_out": int(self.n_features_out_),
        }
        if self.layer_selection_ is not None:
            config["layer_scores"] = [
                {"layer": s.layer, "fisher": s.fisher, "fisher_chance": s.fisher_chance, "participation_ratio": s.participation_ratio, "score": s.score}
                for s in self.layer_selection_.scores
            ]
        tensors: dict[str, np.ndarray] = {}
        if self.use_text:
            tensors["text_mean"] = self.text_mean_
            tensors["text_scale"] = self.text_scale_
        if self.encoder is not None:
            tensors["enc_mean"] = self.enc_mean_
            tensors["enc_components"] = self.enc_components_
            tensors["enc_scale"] = self.enc_scale_
        return config, {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}

    @classmethod
    def from_state(
        cls,
        config: dict[str, Any],
        tensors: dict[str, np.ndarray],
        *,
        encoder_override: Optional[str] = None,
        cache_dir: Optional[str] = None,
    ) -> "RouterFeaturizer":
        """Rebuild a fitted featurizer; shapes are checked against each other, not trusted."""
        use_text = config["use_text"]
        encoder = config["encoder"]
        if encoder_override is not None and encoder is not None:
            encoder = encoder_override  # the same model, found somewhere else on this machine
        if not isinstance(use_text, bool) or not (encoder is None or isinstance(encoder, str)):
            raise ValueError("featurizer: use_text must be a bool and encoder a string or null")
        layers = config["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, int) and 0 <= x < 1000 for x in layers):
            raise ValueError("featurizer: layers must be a list of small non-negative integers")
        max_length = config["max_length"]
        if not isinstance(max_length, int) or not 8 <= max_length <= 8192:
            raise ValueError("featurizer: max_length must be an integer in [8, 8192]")
        if use_text and config.get("text_feature_names") != list(TEXT_FEATURE_NAMES):
            raise ValueError("featurizer: text features were computed by a different version of the code")
        obj = cls(
            encoder=encoder, use_text=use_text, max_length=max_length, layers=layers or None,
            pca_components=config.get("pca_components"), cache_dir=cache_dir,
        )
        expected = set()
        n_out = 0
        if use_text:
            expected |= {"text_mean", "text_scale"}
        if config["encoder"] is not None:
            expected |= {"enc_mean", "enc_components", "enc_scale"}
            if not layers:
                raise ValueError("featurizer: an encoder needs at least one layer")
        if set(tensors) != expected:
            raise ValueError(f"featurizer: expected tensors {sorted(expected)}, got {sorted(tensors)}")
        if use_text:
            d = len(TEXT_FEATURE_NAMES)
            for name in ("text_mean", "text_scale"):
                if tensors[name].shape != (d,):
                    raise ValueError(f"featurizer: {name} has shape {tensors[name].shape}, expected ({d},)")
            obj.text_mean_ = tensors["text_mean"].astype(np.float64)
            obj.text_scale_ = tensors["text_scale"].astype(np.float64)
            n_out += d
        if config["encoder"] is not None:
            comps = tensors["enc_components"]
            if comps.ndim != 2 or tensors["enc_mean"].shape != (comps.shape[1],) or tensors["enc_scale"].shape != (comps.shape[0],):
                raise ValueError("featurizer: encoder mean/components/scale shapes do not fit together")
            obj.enc_mean_ = tensors["enc_mean"].astype(np.float64)
            obj.enc_components_ = comps.astype(np.float64)
            obj.enc_scale_ = tensors["enc_scale"].astype(np.float64)
            obj.layers_ = list(layers)
            n_out += comps.shape[0]
        if config.get("n_features_out") != n_out:
            raise ValueError(f"featurizer: n_features_out {config.get('n_features_out')} does not match tensors ({n_out})")
        obj.n_features_out_ = n_out
        obj.layer_selection_ = None
        return obj
