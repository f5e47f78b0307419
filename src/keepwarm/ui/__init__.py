"""The ORCHESTRATE web page (``keepwarm ui``): Streamlit over keepwarm's core API.

``page.py`` is the Streamlit script (sidebar and layout); one module per section draws it
(``system_settings``, ``run_mode``, ``service_mode``, ``data_view``) through the helpers of
``actions.py``; ``snippets.py`` renders the Python and the CLI command equivalent to each action;
``live.py`` keeps the live view's samples; ``server.py`` serves the page on 127.0.0.1. ``server``,
``snippets`` and ``live`` do not import Streamlit: ``keepwarm ui``'s own process never loads it.
"""
