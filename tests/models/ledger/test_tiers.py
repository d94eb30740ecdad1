"""MIG GPU-equivalents and GPU product names (DESIGN.md: the ledger, GPU-equivalents)."""

from fractions import Fraction

import pytest

from models.ledger.tiers import (
    KNOWN_MIG_PROFILES,
    UnknownMigProfile,
    mig_gpu_equivalents,
    normalize_product,
)


@pytest.mark.parametrize(
    ("profile", "product", "expected"),
    [
        # A100 40GB: 7 compute slices, 5 GB per memory slice.
        ("1g.5gb", "NVIDIA A100-SXM4-40GB", Fraction(1, 7)),
        ("3g.20gb", "NVIDIA A100-SXM4-40GB", Fraction(3, 7)),
        ("7g.40gb", "NVIDIA A100-SXM4-40GB", Fraction(1)),
        # A100 80GB and H100 80GB: DESIGN.md's own examples.
        ("1g.10gb", "NVIDIA A100-SXM4-80GB", Fraction(1, 7)),
        ("2g.20gb", "NVIDIA A100-SXM4-80GB", Fraction(2, 7)),
        ("4g.40gb", "NVIDIA A100-SXM4-80GB", Fraction(4, 7)),
        ("1g.10gb", "NVIDIA H100 80GB HBM3", Fraction(1, 7)),
        ("1g.20gb", "NVIDIA H100 80GB HBM3", Fraction(1, 7)),
        ("3g.40gb", "NVIDIA H100 80GB HBM3", Fraction(3, 7)),
        ("7g.80gb", "NVIDIA H100 80GB HBM3", Fraction(1)),
        # H200 141GB.
        ("1g.18gb", "NVIDIA H200", Fraction(1, 7)),
        ("2g.35gb", "NVIDIA H200", Fraction(2, 7)),
        ("7g.141gb", "NVIDIA H200", Fraction(1)),
        # A30 has 4 compute slices: 2g.12gb is half the GPU, not 2/7.
        ("1g.6gb", "NVIDIA A30", Fraction(1, 4)),
        ("2g.12gb", "NVIDIA A30", Fraction(1, 2)),
        ("4g.24gb", "NVIDIA A30", Fraction(1)),
        # No product given: the 7-slice families are the default.
        ("3g.40gb", None, Fraction(3, 7)),
        # Resource names as the device plugin writes them (`nvidia.com/mig-1g.10gb`), any case.
        ("mig-1g.10gb", None, Fraction(1, 7)),
        ("MIG-3G.40GB", "NVIDIA-H100-80GB-HBM3", Fraction(3, 7)),
        # Media-extension profiles take the same compute slices.
        ("1g.10gb+me", "NVIDIA A100-SXM4-80GB", Fraction(1, 7)),
    ],
)
def test_mig_gpu_equivalents(profile: str, product: str | None, expected: Fraction) -> None:
    assert mig_gpu_equivalents(profile, product) == expected


def test_every_documented_profile_is_its_compute_slices_over_the_parent() -> None:
    for family, profiles in KNOWN_MIG_PROFILES.items():
        slices = 4 if family == "A30" else 7
        for profile in profiles:
            g = int(profile.split("g.")[0])
            assert mig_gpu_equivalents(profile, family) == Fraction(g, slices), (family, profile)


@pytest.mark.parametrize(
    ("profile", "product", "reason"),
    [
        ("8g.80gb", "NVIDIA H100 80GB HBM3", "8 of 7"),
        ("5g.24gb", "NVIDIA A30", "5 of 4"),
        ("0g.10gb", None, "0 of 7"),
        ("3g", None, "not of the form"),
        ("whole", None, "not of the form"),
    ],
)
def test_impossible_mig_profiles_are_errors(profile: str, product: str | None,
                                            reason: str) -> None:
    with pytest.raises(UnknownMigProfile, match=reason):
        mig_gpu_equivalents(profile, product)


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        # NVML's device name and the GPU feature discovery label of the same board.
        ("NVIDIA H100 80GB HBM3", "H100-80GB-HBM3"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("Tesla-T4", "T4"),
        ("Tesla T4", "T4"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA H200", "H200"),
        ("  nvidia h200  ", "H200"),
        # MIG mixed strategy: the label carries the profile, which is not part of the product.
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-SXM4-40GB"),
        ("NVIDIA-A100-SXM4-80GB-MIG-3g.40gb", "A100-SXM4-80GB"),
        ("NVIDIA-H100-80GB-HBM3-MIG-7g.80gb", "H100-80GB-HBM3"),
        ("NVIDIA-H200-MIG-1g.18gb", "H200"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1c.3g.40gb", "A100-SXM4-80GB"),
    ],
)
def test_normalize_product(written: str, normalized: str) -> None:
    assert normalize_product(written) == normalized


def test_nvml_name_and_label_of_one_board_are_the_same_product() -> None:
    assert normalize_product("NVIDIA H100 80GB HBM3") == normalize_product("NVIDIA-H100-80GB-HBM3")
    assert normalize_product("Tesla T4") == normalize_product("Tesla-T4")
