"""The dashboard: the router and the sign-in gate. Pages are registered by role, so a page of
another role has no URL in this session; each page checks the role again itself.

An error in a page never reaches the browser as a traceback: the page says something went
wrong, with a reference, and the details go to the server log under that reference."""

from __future__ import annotations

import logging
import secrets

import streamlit as st

from dashboards import gate
from dashboards.routes import PAGES

log = logging.getLogger("dashboards.errors")

st.set_page_config(page_title="GPU chargeback", page_icon=":material/memory:", layout="wide")
try:
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
except Exception:  # st.stop and st.rerun are not Exceptions: they pass through
    reference = secrets.token_hex(4)
    log.exception("page failed, reference %s", reference)
    st.error(f"Something went wrong on this page, and it has been logged (reference "
             f"{reference}). Reload the page; if it happens again, give the reference to "
             "your administrator.")
