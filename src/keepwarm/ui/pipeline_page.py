"""The PIPELINE page: steps from saved snippets, run in order."""

from __future__ import annotations

import streamlit as st

from keepwarm.env import Env


def pipeline_page(env: Env) -> None:
    st.title("PIPELINE")
    st.caption(f"{env.app_target}: not built yet")
