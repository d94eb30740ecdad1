"""GPU products and MIG profiles: names as NVML and Kubernetes write them, GPU-equivalents."""

from __future__ import annotations

import re
from fractions import Fraction

from models.errors import UserError

# Compute slices of the whole GPU per product family. Every MIG-capable NVIDIA GPU so far
# (A100, A30, H100, H200, B200) has its "Ng" profiles over 7 slices, except A30 over 4.
_SLICES_BY_FAMILY = {"A30": 4}
_DEFAULT_SLICES = 7

_MIG_PROFILE = re.compile(
    r"^(?:(?P<c>\d+)c\.)?(?P<g>\d+)g\.(?P<mem>\d+)gb(?P<suffix>(?:\+[a-z]+)*)$"
)

# Profiles NVIDIA documents per product (memory per instance); used to reject typos early.
KNOWN_MIG_PROFILES: dict[str, frozenset[str]] = {
    "A100-40GB": frozenset({"1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"}),
    "A100-80GB": frozenset({"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}),
    "A30": frozenset({"1g.6gb", "2g.12gb", "4g.24gb"}),
    "H100-80GB": frozenset({"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}),
    "H100-94GB": frozenset({"1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"}),
    "H200": frozenset({"1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"}),
}


class UnknownMigProfile(UserError):
    pass


def mig_gpu_equivalents(profile: str, product: str | None = None) -> Fraction:
    """Compute slices of a MIG profile over the parent's: `3g.40gb` on an H100 is 3/7.

    `Nc.Mg.XXgb` compute-instance profiles count their N compute slices."""
    match = _MIG_PROFILE.match(profile.strip().lower().removeprefix("mig-"))
    if not match:
        raise UnknownMigProfile(
            f"MIG profile {profile!r} is not of the form <g>g.<mem>gb (e.g. 1g.10gb)"
        )
    slices = _DEFAULT_SLICES
    if product is not None and "A30" in normalize_product(product):
        slices = _SLICES_BY_FAMILY["A30"]
    g = int(match["c"] or match["g"])
    if not 0 < g <= slices:
        raise UnknownMigProfile(f"MIG profile {profile!r} has {g} of {slices} compute slices")
    return Fraction(g, slices)


def normalize_product(name: str) -> str:
    """One spelling for a GPU product, whichever tool wrote it.

    NVML says `NVIDIA H100 80GB HBM3`; the `nvidia.com/gpu.product` label says
    `NVIDIA-H100-80GB-HBM3` (and, with MIG's mixed strategy, `NVIDIA-A100-SXM4-40GB-MIG-1g.5gb`);
    older boards are `Tesla-T4` / `Tesla T4`. All become upper case words joined by `-`,
    vendor prefix dropped: `H100-80GB-HBM3`, `A100-SXM4-40GB`, `T4`."""
    text = name.strip().upper().replace("_", "-")
    text = re.sub(r"[\s-]+", "-", text)
    text = re.sub(r"-MIG-(?:\d+C\.)?\d+G\.\d+GB.*$", "", text)
    for prefix in ("NVIDIA-", "TESLA-", "GEFORCE-", "QUADRO-"):
        text = text.removeprefix(prefix)
    return text.strip("-")
