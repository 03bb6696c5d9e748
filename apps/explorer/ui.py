"""The attention explorer's page: Gradio components wired to `Explorer`'s handlers and the model-free views.

Four tabs: the text's tokens and attention maps (layer slider, head dropdown with the mean of heads, the keys a
chosen token attends most), the next-token distribution through the sampling filters (on the same text), the
attention masks side by side, and the KV cache's memory for a model's shape (the loaded model's by default). The
first example is shown when the page opens, at the layer and head where SmolLM2 resolves "it" to "The animal".
Refused input raises a Gradio warning and leaves its reason in the status line; nothing shows a trace.
"""

from __future__ import annotations

import gradio as gr

from apps.explorer.app import (
    DEFAULT_HEAD,
    DEFAULT_LAYER,
    EXAMPLES,
    MAX_TEXT_CHARS,
    MAX_TOKENS,
    ExplorerError,
    Run,
    head_index,
)
from apps.explorer.charts import attention_figure, masks_figure
from apps.explorer.kv_memory import DTYPES, KVMemoryError, KVShape, human_bytes, kv_memory
from apps.explorer.masks import MAX_LENGTH, MaskError, MaskSettings, mask_views

CSS = """
.explorer-pieces { line-height: 2.1; font-family: ui-monospace, monospace; font-size: 0.95em; }
.explorer-token { display: inline-block; border-radius: 3px; padding: 1px 2px; margin: 0 1px; color: #111; }
.explorer-special { outline: 2px solid #7c3aed; font-weight: 600; }
.explorer-count { color: #555; margin: 0 0 0.3em 0; }
"""
DISTRIBUTION_HEADERS = ["rank", "token", "id", "probability at the temperature", "top-k", "top-p", "min-p",
                        "after the filters"]


def query_choices(run: Run) -> list[tuple[str, int]]:
    return [(label, i) for i, label in enumerate(run.tokens.labels())]


def kv_markdown(shape: KVShape) -> str:
    """The calculator's answer as a table: what our cache allocates, against multi-head attention and a rolling
    window, with the product it comes from."""
    memory = kv_memory(shape)
    rows = [(f"**our KVCache** ({shape.n_kv_heads} KV heads, every slot of the context)", memory.allocated),
            (f"multi-head attention ({shape.n_heads} KV heads, one per query head)", memory.mha)]
    if memory.rolling is not None:
        rows.append((f"a rolling cache of the window's {min(shape.window, shape.context):,} slots (ours allocates "
                     "the whole context and masks the rest)", memory.rolling))
    table = "\n".join(f"| {what} | {human_bytes(count)} | {count:,} |" for what, count in rows)
    return (f"| cache | memory | bytes |\n|---|---|---|\n{table}\n\n2 (keys and values) × {shape.n_layers} layers × "
            f"{shape.batch} sequences × {shape.n_kv_heads} KV heads × {shape.context:,} tokens × {shape.head_dim} "
            f"dims × {DTYPES[shape.dtype].itemsize} bytes: {human_bytes(memory.per_token)} per token of a sequence.")


def build_demo(explorer) -> gr.Blocks:
    """The Gradio page over `explorer` (an `apps.explorer.app.Explorer`)."""
    config = explorer.model.config
    layer0 = min(DEFAULT_LAYER, config.n_layers - 1)
    cache_dtype = str(explorer.model.dtype).removeprefix("torch.")  # the engine's cache holds the activations' dtype
    head0 = explorer.heads[DEFAULT_HEAD + 1] if config.n_heads > DEFAULT_HEAD else explorer.heads[0]

    def refused(error: ExplorerError, count: int):
        gr.Warning(str(error))
        return (f"**{error}**", *(gr.skip(),) * count)

    def on_show(text, as_chat, layer, head):
        """Tokens, then the map at the chosen layer and head from the default query token."""
        try:
            run = explorer.run(text, as_chat)
            query = run.default_query()
            figure, strongest = view(run, layer, head, query)
        except ExplorerError as error:
            return refused(error, 6)
        tokens = run.tokens
        return ("", tokens.html(), gr.update(value=tokens.prompt, visible=bool(as_chat)), tokens.rows(), figure,
                gr.update(choices=query_choices(run), value=query), strongest)

    def view(run: Run, layer, head, query):
        head_number = head_index(head)
        title = f"layer {int(layer)}, {head if head_number is None else head}"
        figure = attention_figure(run.attention(int(layer), head_number), run.tokens.labels(), title)
        return figure, run.strongest(int(layer), head_number, int(query))

    def on_map(text, as_chat, layer, head, query):
        try:
            run = explorer.run(text, as_chat)
            if query is None or not 0 <= int(query) < len(run.tokens.ids):
                query = run.default_query()
            return "", *view(run, layer, head, query)
        except ExplorerError as error:
            return refused(error, 2)

    def on_query(text, as_chat, layer, head, query):
        try:
            if query is None:
                raise ExplorerError("Show a text first, then choose one of its tokens.")
            return "", explorer.run(text, as_chat).strongest(int(layer), head_index(head), int(query))
        except ExplorerError as error:
            return refused(error, 1)

    def on_sampling(text, as_chat, temperature, top_k, top_p, min_p):
        try:
            filtered, rows = explorer.next_tokens(text, as_chat, temperature, int(top_k or 0), top_p, min_p)
        except ExplorerError as error:
            gr.Warning(str(error))
            return f"**{error}**", gr.skip()
        vocab = filtered.final.shape[0]
        what = ("temperature 0 is greedy: the most likely token, always" if filtered.greedy else
                f"**{filtered.survivors:,} of {vocab:,} tokens survive** the filters; the draw picks among them "
                "with the renormalised probabilities of the last column")
        return f"Next token after the text: {what}.", rows

    def on_masks(length, window, stride, summary):
        try:
            settings = MaskSettings(*(int(value) for value in (length, window, stride, summary)))
        except (MaskError, TypeError, ValueError) as error:
            gr.Warning(str(error))
            return f"**{error}**", gr.skip()
        return "", masks_figure(mask_views(settings))

    def on_memory(layers, heads, kv_heads, head_dim, context, batch, dtype, window):
        try:
            shape = KVShape(*(int(v) if v is not None else v for v in (layers, heads, kv_heads, head_dim, context,
                                                                       batch)),
                            dtype=dtype, window=int(window) if window else None)
            return kv_markdown(shape)
        except KVMemoryError as error:
            return f"**{error}**"

    with gr.Blocks(title="llmkit: attention explorer") as demo:
        gr.Markdown(f"## How attention works, on a real model\nType a text to see its tokens and where each token "
                    f"looks, layer by layer and head by head, in `{explorer.name}` ({config.n_layers} layers of "
                    f"{config.n_heads} heads sharing {config.n_kv_heads} key/value heads). Everything runs on this "
                    "computer.")
        status = gr.Markdown(elem_id="status")
        with gr.Tab("Tokens and attention", elem_id="attention-tab"), gr.Row():
            with gr.Column(scale=2, min_width=320):
                text = gr.Textbox(value=EXAMPLES[0], lines=3, max_lines=8, max_length=MAX_TEXT_CHARS,
                                  label=f"Text (up to {MAX_TOKENS} tokens)", elem_id="text")
                as_chat = gr.Checkbox(label="as a chat message (under the model's chat template)",
                                      elem_id="as-chat")
                show = gr.Button("Show", variant="primary", elem_id="show")
                gr.Examples([[example] for example in EXAMPLES], inputs=[text], label="Classic examples")
                tokens = gr.HTML(elem_id="tokens")
                prompt = gr.Textbox(label="What the model reads: the chat template around the text", lines=6,
                                    visible=False, interactive=False, elem_id="prompt")
                with gr.Accordion("Token ids", open=False):
                    table = gr.Dataframe(headers=["position", "id", "text"], interactive=False, max_height=320,
                                         elem_id="token-table")
            with gr.Column(scale=3, min_width=320):
                with gr.Row():
                    layer = gr.Slider(0, config.n_layers - 1, value=layer0, step=1, label="Layer",
                                      elem_id="layer")
                    head = gr.Dropdown(explorer.heads, value=head0, label="Head", elem_id="head")
                plot = gr.Plot(label="Attention weights: each row (a query token) sums to one",
                               elem_id="attention-map")
                query = gr.Dropdown([], label="Token: the keys it attends most", elem_id="query")
                strongest = gr.Dataframe(headers=["position", "token", "weight"], interactive=False,
                                         elem_id="strongest")
                gr.Markdown("The first token often takes most of the weight in later layers: a head with "
                            "nothing to look at puts its attention there (an *attention sink*).")
        with gr.Tab("Next token", elem_id="sampling-tab"):
            gr.Markdown("The model's distribution for the token after the text above, through the engine's own "
                        "filters: temperature scales the logits, top-k keeps the k most likely, top-p the smallest "
                        "set holding that much probability, min-p those at least that fraction as likely as the "
                        "top one.")
            with gr.Row():
                temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature", elem_id="temperature")
                top_k = gr.Number(value=40, minimum=0, precision=0, label="Top-k (0: off)", elem_id="top-k")
                top_p = gr.Slider(0.01, 1, value=0.9, step=0.01, label="Top-p (1: off)", elem_id="top-p")
                min_p = gr.Slider(0, 1, value=0.05, step=0.01, label="Min-p (0: off)", elem_id="min-p")
            sampling_status = gr.Markdown(elem_id="sampling-status")
            distribution = gr.Dataframe(headers=DISTRIBUTION_HEADERS, interactive=False, elem_id="distribution")
        with gr.Tab("Masks", elem_id="masks-tab"):
            gr.Markdown("Which keys (columns) each query (row) may attend. Sliding window: the last `window` "
                        "tokens; strided: those plus every `stride`-th earlier one; fixed sparse (Child et al., "
                        "2019): the query's own block of `stride` tokens plus the last `summary` tokens of every "
                        "block.")
            with gr.Row():
                length = gr.Slider(2, MAX_LENGTH, value=24, step=1, label="Length", elem_id="mask-length")
                window = gr.Number(value=4, minimum=1, precision=0, label="Window", elem_id="mask-window")
                stride = gr.Number(value=6, minimum=1, precision=0, label="Stride / block", elem_id="mask-stride")
                summary = gr.Number(value=1, minimum=1, precision=0, label="Summary", elem_id="mask-summary")
            masks_status = gr.Markdown(elem_id="masks-status")
            masks = gr.Plot(elem_id="masks")
        with gr.Tab("KV cache memory", elem_id="memory-tab"):
            gr.Markdown("What `KVCache.allocate` holds for a model's attention shape: the loaded model's to start "
                        "with, in the dtype its cache uses.")
            with gr.Row():
                layers = gr.Number(value=config.n_layers, precision=0, label="Layers", elem_id="kv-layers")
                heads = gr.Number(value=config.n_heads, precision=0, label="Query heads", elem_id="kv-heads")
                kv_heads = gr.Number(value=config.n_kv_heads, precision=0, label="KV heads", elem_id="kv-kv-heads")
                head_dim = gr.Number(value=config.head_dim, precision=0, label="Head dim", elem_id="kv-head-dim")
            with gr.Row():
                context = gr.Number(value=config.max_seq_len, precision=0, label="Context (tokens)",
                                    elem_id="kv-context")
                batch = gr.Number(value=1, precision=0, label="Batch (sequences)", elem_id="kv-batch")
                dtype = gr.Dropdown(list(DTYPES), value=cache_dtype, label="Cache dtype", elem_id="kv-dtype")
                kv_window = gr.Number(value=0, precision=0, label="Sliding window (0: none)", elem_id="kv-window")
            memory = gr.Markdown(elem_id="kv-memory")

        shown_outputs = [status, tokens, prompt, table, plot, query, strongest]
        sampling_inputs = [text, as_chat, temperature, top_k, top_p, min_p]
        mask_inputs = [length, window, stride, summary]
        memory_inputs = [layers, heads, kv_heads, head_dim, context, batch, dtype, kv_window]
        for event in (demo.load, show.click, text.submit):
            event(on_show, [text, as_chat, layer, head], shown_outputs).then(
                on_sampling, sampling_inputs, [sampling_status, distribution])
        as_chat.input(on_show, [text, as_chat, layer, head], shown_outputs).then(
            on_sampling, sampling_inputs, [sampling_status, distribution])
        gr.on([layer.release, head.input], on_map, [text, as_chat, layer, head, query], [status, plot, strongest])
        query.input(on_query, [text, as_chat, layer, head, query], [status, strongest])
        gr.on([temperature.release, top_k.input, top_p.release, min_p.release], on_sampling, sampling_inputs,
              [sampling_status, distribution])
        gr.on([demo.load, length.release, window.input, stride.input, summary.input], on_masks, mask_inputs,
              [masks_status, masks])
        gr.on([demo.load, *(box.input for box in memory_inputs)], on_memory, memory_inputs, memory)
    return demo
