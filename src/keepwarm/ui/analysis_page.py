"""The ANALYSIS page: charts of a run's output or export.csv."""

from __future__ import annotations

import streamlit as st

from keepwarm.env import Env


def analysis_page(env: Env) -> None:
    st.title("ANALYSIS")
    st.caption(f"{env.app_target}: not built yet")
