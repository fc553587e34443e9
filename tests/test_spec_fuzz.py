"""Property-based: malformed study files and values reach the loader (``load_spec`` /
``parse_spec``, what the CLI uses) and only ``SpecError`` comes out, never a traceback from
deeper code (TypeError, KeyError, AttributeError, ...)."""

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagstudy.study.loader import load_spec, parse_spec
from dagstudy.study.spec import SpecError, StudySpec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
FIELDS = sorted(StudySpec.model_fields)
SEARCH_FIELDS = sorted(SMOKE["search"]) + ["readout", "loss", "revival", "bias_init",
                                           "fanin_wiring"]

# Scalars a YAML file can hold, bad numbers included.
scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, math.nan, math.inf, 2**63, "1e3", "${NOPE}",
                     "${HOME}", "${X:-}", "adam", "sgd", "fanin", "nope", "", " "]),
)
# Nested structures of those (what yaml.safe_load can return), keys included.
keys = st.one_of(st.sampled_from(FIELDS + SEARCH_FIELDS + ["low", "high", "log", "step",
                                                           "name", "trials", "momentum"]),
                 st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
# A path into the smoke study, to replace one value there.
PATHS = [(f,) for f in SMOKE] + [("search", f) for f in SMOKE["search"]] + [
    ("budget", "trials"), ("objective", "metric"), ("objective", "direction"),
    ("search", "optimizer", "adam"), ("search", "optimizer", "sgd", "momentum"),
    ("search", "optimizer", "nope"), ("search", "lr", "low"), ("search", "lr", "high"),
    ("search", "lr", "log"), ("search", "depth", "step"), ("sampler", "name"),
    ("sampler", "seed"), ("pruner", "name"), ("pruner", "n_warmup_steps"), ("resources", "cpus"),
    ("base", "probe_size"), ("base", "divergence_loss"), ("search", "revival"),
    ("storage", "optuna"), ("storage", "mlflow"), ("max_concurrent",), ("seeds",),
    ("first_seed",), ("device",), ("name",), ("epochs",), ("search", "topology", 0),
]


def replaced(path, value) -> object:
    data = copy.deepcopy(SMOKE)
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return data
    if isinstance(node, dict) or (isinstance(node, list) and path[-1] < len(node)):
        node[path[-1]] = value
    return data


def only_spec_errors(data) -> None:
    """Valid or ``SpecError`` with a message; anything else fails the test with its type."""
    try:
        parse_spec(data)
    except SpecError as e:
        assert_names_a_field(e)


def assert_names_a_field(error: SpecError) -> None:
    """Each line is ``field.path: problem`` (or the one whole-document message)."""
    message = str(error)
    assert message.strip(), "SpecError without a message"
    assert ": " in message or "must be a mapping" in message, message


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(st.sampled_from(PATHS), values)
def test_one_bad_value_in_a_valid_study(path, value):
    only_spec_errors(replaced(path, value))


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_random_top_level_mappings(data):
    only_spec_errors(data)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS + ["bogus"]), values, max_size=len(FIELDS)),
       st.booleans())
def test_random_fields_over_the_smoke_study(changes, drop):
    data = {**({} if drop else copy.deepcopy(SMOKE)), **changes}
    only_spec_errors(data)


@settings(max_examples=60, deadline=None)
@given(values)
def test_any_document_through_the_file_loader(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "study.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        load_spec(path)
    except SpecError as e:
        assert_names_a_field(e)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_bytes_as_a_file(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "study.yaml"
    path.write_bytes(raw)
    try:
        load_spec(path)
    except SpecError as e:
        assert_names_a_field(e)
