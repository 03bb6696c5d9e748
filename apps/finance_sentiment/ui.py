"""The financial news sentiment page: Gradio components wired to `SentimentApp`'s handlers, and nothing else.

News comes in on the left (paste, a file, a feed URL, the sample), the chosen article's coloured sentences show on
the right, the articles table and the per-company chart below; the filters (company, dates) apply to the table, the
chart and the export alike. After each addition the table, the company lists and the chart are read again from the
store, so another tab's additions show too. A failed addition raises a Gradio warning and leaves its reason in the
status line; nothing shows a trace.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from apps.finance_sentiment import news
from apps.finance_sentiment.app import ARTICLE_COLUMNS, EMPTY_VIEW, Outcome, SentimentApp

CSS = """
#article-view { max-height: 80vh; overflow-y: auto; }
.sentiment-article h3 { margin: 0 0 0.3em 0; }
.sentiment-meta { color: #555; font-size: 0.9em; }
.sentiment-score { border-radius: 4px; padding: 0 4px; white-space: nowrap; }
.sentiment-companies { width: 100%; border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
.sentiment-companies th, .sentiment-companies td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left;
  vertical-align: top; }
.sentiment-text p { line-height: 1.9; }
.sentiment-sentence { border-radius: 3px; padding: 1px 2px; cursor: help; }
.sentiment-sentence sup { color: #666; font-size: 0.7em; margin-left: 1px; }
.sentiment-headline { font-weight: 600; }
.sentiment-explanations summary { cursor: pointer; margin: 0.5em 0; }
.sentiment-explanations li { margin-bottom: 0.4em; font-size: 0.9em; }
#add-status { white-space: pre-wrap; }
"""
WATCHLIST_HELP = "Watchlist (optional): company names, separated by commas or new lines"


def status_html(outcome: Outcome | str) -> str:
    """The status line, escaped (it quotes file names, rows and titles)."""
    text = outcome.status if isinstance(outcome, Outcome) else outcome
    return f"<div class='sentiment-status'>{html.escape(text)}</div>" if text else ""


def table_value(rows: list[list]) -> dict:
    return {"headers": ARTICLE_COLUMNS, "data": rows or [[""] * len(ARTICLE_COLUMNS)]}


def build_demo(app: SentimentApp) -> gr.Blocks:
    """The Gradio page over `app`."""
    progress_bar = gr.Progress()  # Gradio fills in a handler's argument whose default is a Progress

    def refresh(company: str | None, start: str, end: str, chosen: list[str] | None, half_life):
        """(table, keys, company filter, chart companies, chart, chart status) as the store has them now."""
        table = app.articles(company, start, end)
        names = app.companies()
        if table.status:
            gr.Warning(table.status)
        kept = [name for name in chosen or [] if name in names]
        chart = app.chart(kept, half_life, start, end)
        return (table_value(table.rows), table.keys,
                gr.update(choices=["", *names], value=company if company in names else ""),
                gr.update(choices=names, value=kept or chart.companies), chart.figure, chart.status)

    def added(outcome: Outcome, shown_key: str | None, *filters):
        if outcome.error:
            gr.Warning(outcome.status)
        view = app.article_view(shown_key) if shown_key else gr.skip()
        return status_html(outcome), view, *refresh(*filters)

    def on_paste(text, watchlist, date, *filters):
        outcome = app.add_text(text, watchlist, date)
        return added(outcome, outcome.keys[0] if outcome.keys else None, *filters)

    def on_file(file, watchlist, *filters, progress=progress_bar):
        if file is None:
            return (gr.skip(),) * 8
        path = Path(file if isinstance(file, str) else file.name)
        try:
            outcome = app.add_file(path, watchlist, lambda fraction, what: progress(fraction, desc=what))
        finally:
            path.unlink(missing_ok=True)  # Gradio's temp copy: the store keeps what was read
        return added(outcome, None, *filters)

    def on_feed(url, watchlist, *filters, progress=progress_bar):
        outcome = app.add_feed(url, watchlist, lambda fraction, what: progress(fraction, desc=what))
        return added(outcome, None, *filters)

    def on_sample(*filters, progress=progress_bar):
        outcome = app.load_sample(lambda fraction, what: progress(fraction, desc=what))
        return added(outcome, None, *filters)

    def on_select(keys: list[str], event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return app.article_view(keys[row]) if keys and 0 <= row < len(keys) else gr.skip()

    def on_chart(chosen, half_life, start, end):
        chart = app.chart(chosen, half_life, start, end)
        if chart.status and not chart.companies:
            gr.Warning(chart.status)
        return chart.figure, chart.status

    def on_export(chosen, half_life, start, end):
        export = app.export(chosen, half_life, start, end)
        if export.path is None:
            gr.Warning(export.status)
        return gr.update(value=str(export.path) if export.path else None, visible=export.path is not None), \
            export.status

    with gr.Blocks(title="llmkit: financial news sentiment") as demo:
        gr.Markdown("## Financial news sentiment\nPaste an article or load news: each sentence is scored negative, "
                    "neutral or positive, each company named gets its own score with its reason, and the chart "
                    "follows companies day by day. Everything runs on this computer.")
        keys = gr.State([])
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=2, min_width=320, elem_id="inputs"):
                with gr.Tab("Paste an article", elem_id="paste-tab"):
                    article = gr.Textbox(label="Article (first line: the headline)", lines=9, max_lines=20,
                                         placeholder="Paste a news article or press release here",
                                         elem_id="article")
                    date = gr.Textbox(label="Date (optional, YYYY-MM-DD): dated articles are charted",
                                      elem_id="article-date")
                    score = gr.Button("Score it", variant="primary", elem_id="score")
                with gr.Tab("File or feed", elem_id="file-tab"):
                    upload = gr.File(label=f"CSV, JSONL, RSS/Atom, HTML or text (up to "
                                     f"{news.MAX_FILE_BYTES // 2**20} MB); CSV columns: text, title, date, source, "
                                     "url", file_types=sorted(news.SUFFIX_KINDS), elem_id="upload")
                    feed_url = gr.Textbox(label="Or a feed's URL (RSS or Atom)", placeholder="https://...",
                                          elem_id="feed-url")
                    read_feed = gr.Button("Read the feed", elem_id="read-feed")
                watchlist = gr.Textbox(label=WATCHLIST_HELP, lines=1, max_lines=4, elem_id="watchlist",
                                       placeholder="Harbor Bancorp, Fallowmere Bank")
                sample = gr.Button("Load sample news (fictional)", elem_id="load-sample")
                status = gr.HTML(elem_id="add-status")
            with gr.Column(scale=3, min_width=320):
                view = gr.HTML(EMPTY_VIEW, elem_id="article-view")
        gr.Markdown("### Articles")
        with gr.Row():
            company = gr.Dropdown(label="Company", choices=[""], value="", allow_custom_value=False,
                                  elem_id="company-filter", scale=2)
            start = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="start-date", scale=1)
            end = gr.Textbox(label="To (YYYY-MM-DD)", elem_id="end-date", scale=1)
        table = gr.Dataframe(value=table_value([]), interactive=False, wrap=True, max_height=360,
                             column_widths=["10%", "34%", "14%", "7%", "8%", "27%"],
                             label="Articles (click one to see its sentences)", elem_id="articles")
        gr.Markdown("### Companies over time")
        with gr.Row():
            chosen = gr.Dropdown(label="Companies on the chart", choices=[], multiselect=True,
                                 elem_id="chart-companies", scale=3)
            half_life = gr.Number(label="Half-life in days (0: each day on its own)", value=0, minimum=0,
                                  elem_id="half-life", scale=1)
        plot = gr.Plot(label="Daily sentiment index: mean score, its 95% interval, marker size = mentions",
                       elem_id="chart")
        chart_status = gr.Markdown(elem_id="chart-status")
        with gr.Row():
            export = gr.Button("Export the daily index (CSV)", elem_id="export", scale=1)
            download = gr.File(label="Daily index CSV", visible=False, interactive=False, elem_id="download",
                               scale=2)
        export_status = gr.Markdown(elem_id="export-status")

        filters = [company, start, end, chosen, half_life]
        refreshed = [table, keys, company, chosen, plot, chart_status]
        demo.load(refresh, filters, refreshed)
        score.click(on_paste, [article, watchlist, date, *filters], [status, view, *refreshed])
        upload.upload(on_file, [upload, watchlist, *filters], [status, view, *refreshed])
        gr.on([read_feed.click, feed_url.submit], on_feed, [feed_url, watchlist, *filters], [status, view, *refreshed])
        sample.click(on_sample, filters, [status, view, *refreshed])
        table.select(on_select, keys, view)
        gr.on([company.input, start.submit, end.submit], refresh, filters, refreshed)
        gr.on([chosen.input, half_life.input], on_chart, [chosen, half_life, start, end],
              [plot, chart_status])
        export.click(on_export, [chosen, half_life, start, end], [download, export_status])
    return demo
