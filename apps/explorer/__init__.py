"""The attention explorer (`llmkit explore`): a text's tokens, its attention maps per layer and head on a real model,
the attention masks side by side, the next-token distribution through the sampling filters, and the KV cache's
memory for a model's shape.

app.py holds `Explorer`, whose methods are the handlers on the model (tested without a server); masks.py,
distribution.py and kv_memory.py compute the views that need no model, with core's own functions; charts.py draws
the heatmaps; ui.py builds the Gradio page (`build_demo`, imported from there: it imports gradio); command.py is the
CLI command, exported here (importing the package loads neither torch nor gradio).
"""

from apps.explorer.command import add_arguments, run

__all__ = ["add_arguments", "run"]
