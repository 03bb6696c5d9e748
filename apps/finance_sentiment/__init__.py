"""Financial news sentiment: sentences, articles, companies, time series, a Gradio app (issue 15)."""
