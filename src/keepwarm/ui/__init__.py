"""The ORCHESTRATE web page (``keepwarm ui``): Streamlit over keepwarm's core API.

``page.py`` is the Streamlit script; ``snippets.py`` renders the Python and the CLI command equivalent
to each action; ``live.py`` keeps the live view's samples; ``server.py`` serves the page on 127.0.0.1.
Nothing here imports Streamlit until the page itself runs.
"""
