"""The dashboard: the router and the sign-in gate. Pages are registered by role, so a page of
another role has no URL in this session; each page checks the role again itself."""

from __future__ import annotations

import streamlit as st

from dashboards import gate
from dashboards.routes import PAGES

st.set_page_config(page_title="GPU chargeback", page_icon=":material/memory:", layout="wide")
user = gate.signed_in()
with st.sidebar:
    st.caption(f"Signed in as **{user.name}** ({user.role})")
    if st.button("Sign out"):
        gate.sign_out()
navigation = st.navigation([
    st.Page(path, title=title, url_path=url, icon=icon, default=(i == 0))
    for i, (path, title, url, icon) in enumerate(PAGES[user.role.kind])
])
navigation.run()
