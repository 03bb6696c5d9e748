"""Writing small GGUF files for tests, the way llama.cpp's converter writes them.

A tiny transformers model goes in; a GGUF that both `transformers` and llmkit can read comes out,
so the two readers can be compared on the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFValueType, GGUFWriter
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

QUANTIZABLE = (Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)


def _llama_cpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _tensors(arch: str, model) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array, in llama.cpp's names and layouts."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = {}
    if arch == "gpt2":
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        out |= {"token_embd.weight": sd["wte.weight"], "position_embd.weight": sd["wpe.weight"],
                "output_norm.weight": sd["ln_f.weight"], "output_norm.bias": sd["ln_f.bias"]}
        for i in range(model.config.n_layer):
            p = f"h.{i}."
            for ours, theirs, transpose in [("attn_norm", "ln_1", False), ("ffn_norm", "ln_2", False),
                                            ("attn_qkv", "attn.c_attn", True), ("attn_output", "attn.c_proj", True),
                                            ("ffn_up", "mlp.c_fc", True), ("ffn_down", "mlp.c_proj", True)]:
                w = sd[f"{p}{theirs}.weight"]
                out[f"blk.{i}.{ours}.weight"] = w.T.copy() if transpose else w
                out[f"blk.{i}.{ours}.bias"] = sd[f"{p}{theirs}.bias"]
        return out
    c = model.config
    out |= {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not c.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(c.num_hidden_layers):
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                value = sd.get(f"model.layers.{i}.{theirs}.{kind}")
                if value is None:
                    continue
                if arch == "llama" and ours == "attn_q":
                    value = _llama_cpp_permute(value, c.num_attention_heads)
                elif arch == "llama" and ours == "attn_k":
                    value = _llama_cpp_permute(value, c.num_key_value_heads)
                out[f"blk.{i}.{ours}.{kind}"] = value
    return out


def write_gguf(path: Path, arch: str, model, tokenizer, qtype: Q = Q.F32, architecture: str | None = None,
               metadata: dict | None = None) -> Path:
    """Write `model` (a tiny transformers model of `arch`) with `tokenizer` (a tokenizers.Tokenizer) as GGUF.

    Matrices are stored as `qtype`; norms, biases and vectors stay F32, as llama.cpp does. A type the
    gguf package cannot quantise to is written as zero blocks of the right size (a file to reject).
    `architecture` overrides the architecture name written in the file (to make unsupported ones);
    `metadata` sets keys (a scalar) or drops them (None) after the usual ones are written (to make malformed files).
    """
    c = model.config
    writer = GGUFWriter(str(path), architecture or arch)
    if arch == "gpt2":
        writer.add_block_count(c.n_layer)
        writer.add_context_length(c.n_positions)
        writer.add_embedding_length(c.n_embd)
        writer.add_feed_forward_length(4 * c.n_embd)
        writer.add_head_count(c.n_head)
        writer.add_layer_norm_eps(c.layer_norm_epsilon)
    else:
        writer.add_block_count(c.num_hidden_layers)
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_rope_freq_base(500.0)
        writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    spec = json.loads(tokenizer.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    specials = {t["content"] for t in spec["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in specials else 1 for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    for key, value in (metadata or {}).items():
        if value is None:
            writer.kv_data[0].pop(key)  # GGUFWriter has no call to remove a key
        else:
            writer.add_key_value(key, value, _value_type(value))
    for name, value in _tensors(arch, model).items():
        if value.ndim == 2 and qtype in QUANTIZABLE:
            writer.add_tensor(name, quantize(value, qtype), raw_dtype=qtype)
        elif value.ndim == 2 and qtype != Q.F32:
            block, size = GGML_QUANT_SIZES[qtype]
            blocks = np.zeros((value.shape[0], value.shape[1] // block * size), dtype=np.uint8)
            writer.add_tensor(name, blocks, raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _value_type(value) -> GGUFValueType:
    """The GGUF type a scalar is written as: unsigned 32-bit for sizes, as llama.cpp writes them, wider when needed."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            return GGUFValueType.INT32 if value >= -2**31 else GGUFValueType.INT64
        return GGUFValueType.UINT32 if value < 2**32 else GGUFValueType.UINT64
    return GGUFValueType.get_type(value)
