"""A short fuzz of the command line: mutated copies of the shipped world, checkpoint and a results
file, read by ``evaluate``, ``score`` and ``train``; each ends in exit 0 or in one line naming the
file, video or field (exit 2), never in a traceback, and changes no input.

The mutations and the checks are those of ``bench/fuzz.py`` (its long run, 1,000 mutations, is in
``docs/benchmarks.md``). Here: a fixed sample that covers every mutation kind on every kind of file,
then values drawn by hypothesis (derandomized: the same ones on every run) put into the JSON files.
"""
import json
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fuzz.make_base(tmp_path_factory.mktemp("fuzz"))


def covering_sample(seed: int = 0, limit: int = 400) -> list[int]:
    """The first mutations of ``seed`` that together cover every (file kind, mutation kind) pair."""
    seen, picked = set(), []
    for i in range(limit):
        spec = fuzz.draw(seed, i)
        pair = (spec["target"], spec["kind"])
        if pair not in seen:
            seen.add(pair)
            picked.append(i)
    assert len(seen) == len(fuzz.TARGETS) * len(fuzz.KINDS), "the sample misses a pair"
    return picked


SAMPLE = covering_sample()


def explain(row: dict) -> str:
    return (f"mutation {row['i']}: {row['target']} {row['file']} {row['kind']} ({row['mutation']}); "
            f"fscal-edu {' '.join(row['argv'])} -> exit {row['exit']}, {row['outcome']}\n{row['stderr']}"
            + (f"\nchanged: {row['changed']}" if row["changed"] else ""))


@pytest.mark.parametrize("i", SAMPLE, ids=[f"{fuzz.draw(0, i)['target']}-{fuzz.draw(0, i)['kind']}-{i}"
                                           for i in SAMPLE])
def test_a_mutated_input_ends_in_exit_0_or_one_clear_line(base, i):
    row = fuzz.run_case(base, fuzz.draw(0, i))
    assert row["outcome"] in ("exit 0", "clear error"), explain(row)


# JSON values of every type, sizes included: huge integers, NaN, infinities, deep nesting
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10 ** 500, max_value=10 ** 500)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)    # torch flushes subnormals
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(derandomize=True, max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["world.json", "features.json", "splits.json", "annotations.json",
                             "episodes_test_1shot.json"]),
       where=st.integers(min_value=0, max_value=10 ** 6), value=JSON_VALUES,
       baseline=st.booleans())
def test_any_json_value_anywhere_in_the_world_files(base, name, where, value, baseline):
    with tempfile.TemporaryDirectory(prefix="fscal-fuzz-") as tmp:
        case = Path(tmp)
        world = fuzz.copy_case(base, case)
        node = json.loads((world / name).read_text())
        paths = list(fuzz.paths_of(node))
        at = paths[where % len(paths)]
        (world / name).write_text(fuzz.dump(fuzz.put(node, at, value)))
        source = ["--baseline", "prototype"] if baseline else ["--checkpoint", case / "full.pt", "--threads", 1]
        argv = ["evaluate", "--data", world, *source, "--split", "test", "--shots", 1]
        inputs = [world, case / "full.pt"]
        before = fuzz.checksums(inputs)
        code, _, err = fuzz.run_cli(argv)
        outcome = fuzz.classify(code, err, before, fuzz.checksums(inputs))
    assert outcome in ("exit 0", "clear error"), f"{name} {'/'.join(map(str, at))} = {value!r}: {outcome}\n{err}"


def test_the_outcomes_are_told_apart():
    same = {"a": "1"}
    one = "fscal-edu evaluate: error: file 'x.json', field 'd': must be >= 1\n"
    assert fuzz.classify(0, "", same, same) == "exit 0"
    assert fuzz.classify(2, "\rpredict: 0%\r  \r" + one, same, same) == "clear error"
    assert fuzz.classify(2, "fscal-edu evaluate: warning: the cache was rebuilt\n" + one, same, same) == "clear error"
    assert fuzz.classify(2, one + one, same, same) == "cryptic"
    assert fuzz.classify(2, "fscal-edu evaluate: error: something broke\n", same, same) == "cryptic"
    assert fuzz.classify(1, "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n", same, same) == "traceback"
    assert fuzz.classify(None, "", same, same) == "traceback"
    assert fuzz.classify(0, "", same, {"a": "2"}) == "changed input"


def test_a_mutation_is_the_same_on_every_run(base):
    first, again = fuzz.run_case(base, fuzz.draw(3, 5)), fuzz.run_case(base, fuzz.draw(3, 5))
    for key in ("target", "kind", "file", "mutation", "argv", "exit", "outcome"):
        assert first[key] == again[key], key


def test_a_mutated_world_in_a_separate_process(base, tmp_path):
    """The exit code and stderr of a real process, not of ``main`` called in this one."""
    import subprocess
    world = fuzz.copy_case(base, tmp_path)
    cfg = json.loads((world / "features.json").read_text())
    cfg["feature_dim"] = "64"
    (world / "features.json").write_text(json.dumps(cfg))
    before = fuzz.checksums([world])
    p = subprocess.run([sys.executable, "-m", "fscal_edu.cli", "evaluate", "--data", str(world), "--baseline",
                        "prototype"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and "field 'feature_dim'" in p.stderr, p.stderr
    assert fuzz.checksums([world]) == before
