"""Publishing: the read-only per-tenant, finance and operator marts the dashboards open."""

from pathlib import Path

import dagster as dg

from models.marts import publish_marts
from pipelines.resources import BillingConfigResource, OutputsResource, WarehouseResource


@dg.asset(group_name="publish")
def tenant_marts(
    warehouse_db: WarehouseResource, billing: BillingConfigResource, outputs: OutputsResource
) -> dg.MaterializeResult:
    """One read-only DuckDB file per tenant (its rows only), plus finance and operator marts."""
    tenants = billing.tenants()
    with warehouse_db.connect() as con:
        published = publish_marts(con, Path(outputs.marts_path), tenants,
                                  books=billing.books())
    return dg.MaterializeResult(metadata={"marts": len(published),
                                          "folder": outputs.marts_path})
