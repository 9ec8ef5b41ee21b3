"""The request contract every runner applies before a request's data is used (runners/contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from plugserve import config, repository
from plugserve.runners import contract

SR_ENTRY = {
    "source": {"model": "super_resolution"},
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]},
               {"name": "size", "dtype": "INT64", "dims": [2], "shape_tensor": True}],
    "outputs": [{"name": "upscaled", "dtype": "FP32", "dims": [3, -1, -1]}],
    "profiles": [{"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 16, 16], "max": [4, 3, 64, 64]},
                  "size": {"min": [8, 8], "opt": [32, 32], "max": [128, 128]}}],
    "max_batch_size": 4,
}


@pytest.fixture()
def spec(tmp_path):
    """The contract the build writes into config.pbtxt for this models.yaml entry."""
    model = config.parse({"models": {"super_resolution": SR_ENTRY}}, base_dir=tmp_path)["super_resolution"]
    return repository.runner_spec(model)


def check(spec, **arrays):
    return contract.check_request(spec, {name: contract.received(np.asarray(a)) for name, a in arrays.items()})


def test_a_request_inside_the_profile_passes_and_groups_by_item_shape_and_size(spec):
    request = {"image": np.zeros((2, 3, 16, 20), np.float32), "size": np.array([[32, 40], [32, 40]])}
    bounds = check(spec, **request)
    assert bounds == {"image": (2, 3, 16, 20), "size": (32, 40)}
    other_batch = check(spec, image=np.zeros((1, 3, 16, 20), np.float32), size=np.array([[32, 40]]))
    assert contract.group_key(spec, bounds) == contract.group_key(spec, other_batch)
    other_size = check(spec, **{**request, "size": np.array([[32, 48], [32, 48]])})
    assert contract.group_key(spec, bounds) != contract.group_key(spec, other_size)
    assert contract.batch_size(spec, bounds) == 2 and contract.batch_size(spec, other_batch) == 1


@pytest.mark.parametrize("image,size,message", [
    ((1, 3, 16, 16), [[400, 48]], r"input 'size': requested output size \[400, 48\] is outside the model's "
                                  r"profiles \(min \[8, 8\] max \[128, 128\]\)"),
    ((1, 3, 100, 16), [[32, 32]], r"input 'image': shape \[1, 3, 100, 16\] is outside"),
    ((2, 3, 16, 16), [[32, 32], [32, 40]], r"input 'size': all rows must be equal within one request"),
    ((1, 3, 16, 16), [[0, 32]], r"input 'size': requested output size must be positive, got \[0, 32\]"),
    ((0, 3, 16, 16), [[32, 32]], r"input 'image' is empty"),
    ((1, 4, 16, 16), [[32, 32]], r"input 'image': dimension 0 must be 3, got shape \[1, 4, 16, 16\]"),
    ((1, 16, 16), [[32, 32]], r"input 'image': expected rank 4, got shape \[1, 16, 16\]"),
])
def test_a_request_outside_the_contract_gets_an_error_naming_the_input(spec, image, size, message):
    with pytest.raises(contract.RequestError, match=message):
        check(spec, image=np.zeros(image, np.float32), size=np.array(size))


def test_a_wrong_dtype_or_a_missing_input_is_named(spec):
    with pytest.raises(contract.RequestError, match=r"input 'image': expected dtype FP32, got float64"):
        check(spec, image=np.zeros((1, 3, 16, 16)), size=np.array([[32, 32]]))
    with pytest.raises(contract.RequestError, match=r"missing input 'size'"):
        check(spec, image=np.zeros((1, 3, 16, 16), np.float32))


def test_a_group_is_fed_as_one_batch_with_the_shape_tensor_as_one_row_of_values(spec):
    first = {"image": np.full((1, 3, 8, 8), 1, np.float32), "size": np.array([[16, 24]])}
    second = {"image": np.full((2, 3, 8, 8), 2, np.float32), "size": np.array([[16, 24], [16, 24]])}
    feed = contract.feed(spec, [first, second])
    assert feed["image"].shape == (3, 3, 8, 8) and feed["image"][0, 0, 0, 0] == 1 and feed["image"][2, 0, 0, 0] == 2
    assert feed["size"].tolist() == [16, 24]


def test_shapes_are_checked_from_the_header_alone_in_arithmetic_that_cannot_wrap(spec):
    # 1*3*4096*(2^50+1) FP32 is 49,152 bytes modulo 2^64: refused by its dims, before any data exists.
    with pytest.raises(contract.RequestError, match=r"input 'image': shape \[1, 3, 4096, 1125899906842625\] is outside"):
        contract.check_shapes(spec, {"image": (1, 3, 4096, 2**50 + 1), "size": (1, 2)})
    with pytest.raises(contract.RequestError, match=r"input 'size': expected shape \[2, 2\]"):
        contract.check_shapes(spec, {"image": (2, 3, 16, 16), "size": (1, 2)})
    assert contract.elements((4096, 2**50 + 1, 3)) == 3 * 4096 * (2**50 + 1)


def test_a_non_finite_image_is_refused_by_name(spec):
    image = np.zeros((1, 3, 16, 16), np.float32)
    image[0, 0, 3, 4] = np.nan
    with pytest.raises(contract.RequestError, match=r"input 'image' contains NaN or infinite values"):
        check(spec, image=image, size=np.array([[32, 32]]))
    with pytest.raises(contract.RequestError, match=r"input 'image' contains NaN"):
        contract.check_request(spec, {"image": contract.Received("float32", (1, 3, 16, 16), None, False),
                                      "size": contract.received(np.array([[32, 32]]))})


TWO_PROFILES = {**SR_ENTRY, "max_batch_size": 4, "profiles": [
    {"image": {"min": [1, 3, 8, 8], "opt": [4, 3, 16, 16], "max": [4, 3, 32, 32]},
     "size": {"min": [8, 8], "opt": [32, 32], "max": [64, 64]}},
    {"image": {"min": [1, 3, 8, 8], "opt": [1, 3, 16, 16], "max": [2, 3, 64, 64]},
     "size": {"min": [8, 8], "opt": [64, 64], "max": [128, 128]}}]}


def two_profile_spec(tmp_path, **budget):
    entry = {**TWO_PROFILES, **({"budget": budget} if budget else {})}
    return repository.runner_spec(config.parse({"models": {"m": entry}}, base_dir=tmp_path)["m"])


def test_batches_never_cross_profiles_nor_exceed_the_profiles_largest_batch(tmp_path):
    spec = two_profile_spec(tmp_path)
    second = check(spec, image=np.zeros((1, 3, 16, 16), np.float32), size=np.array([[100, 100]]))
    first = check(spec, image=np.zeros((1, 3, 16, 16), np.float32), size=np.array([[32, 32]]))
    assert contract.profile_index(spec, second) == 1 and contract.profile_index(spec, first) == 0
    # Four requests that fit only the second profile (max batch 2) run as two batches of two.
    assert contract.batches(spec, [(i, second) for i in range(4)]) == [[0, 1], [2, 3]]
    assert contract.batches(spec, [(0, first), (1, second), (2, first)]) == [[0, 2], [1]]


def test_the_budget_defaults_to_the_largest_request_the_profiles_allow_and_bounds_requests_and_batches(tmp_path):
    spec = two_profile_spec(tmp_path)
    assert spec["budget"] == {"request_elements": 2 * 3 * 128 * 128, "batch_elements": 2 * 3 * 128 * 128}
    small = two_profile_spec(tmp_path, request_elements=3 * 64 * 64, batch_elements=2 * 3 * 32 * 32)
    with pytest.raises(contract.RequestError, match="needs 49152 elements, more than the model's budget of 12288"):
        check(small, image=np.zeros((1, 3, 16, 16), np.float32), size=np.array([[128, 128]]))
    request = check(small, image=np.zeros((1, 3, 16, 16), np.float32), size=np.array([[32, 32]]))
    assert contract.request_elements(small, request) == 3 * 32 * 32
    assert contract.batches(small, [(i, request) for i in range(3)]) == [[0, 1], [2]]
