"""The dashboard: the router and the sign-in gate. Pages are registered by role, so a page of
another role has no URL in this session; each page checks the role again itself."""

from __future__ import annotations

import streamlit as st

from dashboards import gate

PAGES = {
    "tenant": [
        ("pages/tenant_overview.py", "Costs and usage", "tenant-overview", ":material/insights:"),
        ("pages/tenant_invoices.py", "Invoices", "tenant-invoices", ":material/receipt_long:"),
        ("pages/tenant_reservations.py", "Reservations", "tenant-reservations",
         ":material/event_seat:"),
        ("pages/tenant_insights.py", "Shifts and recommendations", "tenant-insights",
         ":material/trending_up:"),
    ],
    "finance": [
        ("pages/finance_invoices.py", "Invoices and exports", "finance-invoices",
         ":material/receipt_long:"),
        ("pages/finance_revenue.py", "Revenue and GPU capacity", "finance-revenue",
         ":material/account_balance:"),
        ("pages/finance_quality.py", "Data quality", "finance-quality", ":material/fact_check:"),
    ],
    "operator": [
        ("pages/operator_utilization.py", "Utilization and idle", "operator-utilization",
         ":material/memory:"),
        ("pages/operator_recommendations.py", "Shifts and recommendations",
         "operator-recommendations", ":material/tune:"),
    ],
}

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
