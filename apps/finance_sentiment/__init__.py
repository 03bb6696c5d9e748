"""Financial news sentiment: sentences, articles, companies, time series, a Gradio app (issue 15).

classifier.py is the sentence classifier (MiniLM fine-tuned, calibrated, int8 ONNX), rules.py and lexicons.py the
metric-change rule and the lexicons behind its reasons, analysis.py puts them together per sentence, company and
article; companies.py finds the companies a text names, news.py reads news in (text, CSV, JSONL, feeds, HTML) and
merges syndicated copies, timeseries.py stores scored articles (SQLite) and computes each company's daily index.
The web app (`llmkit sentiment-app`): app.py holds `SentimentApp`, whose methods are the handlers (tested without a
server); ui.py builds the Gradio page over it (`build_demo`, imported from there: it imports gradio); command.py is
the CLI command, exported here (importing the package loads neither the classifier nor gradio).
"""

from apps.finance_sentiment.command import add_arguments, run

__all__ = ["add_arguments", "run"]
