"""Resources.ray_options / Resources.demand: the one place an expert's resources turn
into Ray actor options and plan bundles, so a dropped field would fail here."""

from routing.core.config import Resources


def test_ray_options_without_custom_has_no_resources_key() -> None:
    assert Resources(num_cpus=2, num_gpus=0.5).ray_options() == {"num_cpus": 2.0, "num_gpus": 0.5}


def test_ray_options_keeps_zero_gpus() -> None:
    assert Resources().ray_options() == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_ray_options_with_custom_copies_it() -> None:
    r = Resources(num_cpus=1, num_gpus=1, custom={"gpu_a10g": 1})
    options = r.ray_options()
    assert options == {"num_cpus": 1.0, "num_gpus": 1.0, "resources": {"gpu_a10g": 1.0}}
    options["resources"]["other"] = 1.0
    assert r.custom == {"gpu_a10g": 1.0}


def test_demand_is_the_cluster_bundle() -> None:
    assert Resources(num_cpus=0.5).demand() == {"CPU": 0.5, "GPU": 0.0}
    assert Resources(num_cpus=1, num_gpus=2, custom={"gpu_a10g": 1}).demand() == {"CPU": 1.0, "GPU": 2.0, "gpu_a10g": 1.0}
