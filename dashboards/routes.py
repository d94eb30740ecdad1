"""Pages by role: (file relative to app.py, title, URL path, icon). The first is the default."""

PAGES = {
    "tenant": [
        ("pages/tenant_overview.py", "Costs and usage", "tenant-overview", ":material/insights:"),
        ("pages/tenant_bill.py", "Bill explained", "tenant-bill", ":material/calculate:"),
        ("pages/tenant_invoices.py", "Invoices", "tenant-invoices", ":material/receipt_long:"),
        ("pages/tenant_reservations.py", "Reservations", "tenant-reservations",
         ":material/event_seat:"),
        ("pages/tenant_insights.py", "Advice", "tenant-insights",
         ":material/trending_up:"),
        ("pages/tenant_inference.py", "Tokens and latency", "tenant-inference",
         ":material/speed:"),
        ("pages/tenant_budget.py", "Budget and forecast", "tenant-budget",
         ":material/savings:"),
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
        ("pages/operator_holds.py", "Held queues", "operator-holds", ":material/block:"),
        ("pages/operator_inference.py", "SLAs and inference", "operator-inference",
         ":material/speed:"),
    ],
}
