"""Nothing in a filter folder can hang, exhaust or escape the loader, and ``info`` never tracebacks.

Every malicious folder is built in ``tmp_path`` from a small valid one (a
ridge probe on 8 features, no embedder needed: every check here runs
before any model loads).
"""

import contextlib
import hashlib
import io
import json
import os
import signal
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import skops.io as sio
import yaml

from hybrid_estimators import filters
from hybrid_estimators.cli import main
from hybrid_estimators.filters import (
    METADATA_FILE,
    PROBE_FILE,
    FilterError,
    FilterSpec,
    check_adapter_folder,
    load_filter,
    load_probe,
    read_metadata,
    resolve_in_folder,
)
from hybrid_estimators.probe import make_ridge_probe

DIMENSIONS = {"impact": 0.5, "evidence": 0.5}


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM interrupts a blocked open or read."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _config(**hybrid):
    return {
        "name": "demo",
        "version": "v1",
        "dimensions": DIMENSIONS,
        "hybrid_inference": {"embedding_model": "no/such-model", "stage2": None, **hybrid},
    }


def _write_metadata(folder, probe_bytes, **extra):
    metadata = {
        "schema_version": 2,
        "embedding_model": "no/such-model",
        "embedding_dim": 8,
        "dimension_names": list(DIMENSIONS),
        "probe_sha256": hashlib.sha256(probe_bytes).hexdigest(),
        "metrics": {},
        **extra,
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata))


@pytest.fixture
def folder(tmp_path):
    """A sound Stage-1-only filter folder (ridge probe on 8 features)."""
    rng = np.random.RandomState(0)
    probe = make_ridge_probe().fit(rng.normal(size=(20, 8)), rng.uniform(0, 10, (20, 2)))
    folder = tmp_path / "filter"
    (folder / "probe").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(_config()))
    data = sio.dumps(probe)
    (folder / PROBE_FILE).write_bytes(data)
    _write_metadata(folder, data)
    return folder


def _set_config(folder, **hybrid):
    (folder / "config.yaml").write_text(yaml.safe_dump(_config(**hybrid)))


def _info(folder, capsys):
    """``info``'s status and its output, checking that nothing tracebacks."""
    status = main(["info", "--filter", str(folder)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_the_sound_folder_passes_info(folder, capsys):
    status, out, _ = _info(folder, capsys)
    assert status == 0, out
    assert "RidgeCV: 8 inputs -> 2 outputs" in out


# --- paths stay inside the folder ------------------------------------------------------


@pytest.mark.parametrize(
    "probe, message",
    [
        ("/etc/passwd", r"hybrid_inference.probe: '/etc/passwd' is absolute"),
        ("../outside.skops", r"hybrid_inference.probe: '../outside.skops' leaves the filter folder"),
        ("probe/../../outside.skops", r"hybrid_inference.probe: .* leaves the filter folder"),
    ],
)
def test_a_probe_path_outside_the_folder_is_refused(folder, capsys, probe, message):
    _set_config(folder, probe=probe)
    with pytest.raises(FilterError, match=message):
        load_filter(folder)
    status, _, err = _info(folder, capsys)
    assert status == 2 and "hybrid_inference.probe" in err and probe in err


def test_a_probe_symlink_that_leaves_the_folder_is_refused(folder, tmp_path, capsys):
    outside = tmp_path / "outside.skops"
    outside.write_bytes((folder / PROBE_FILE).read_bytes())  # a valid probe, elsewhere
    (folder / PROBE_FILE).unlink()
    (folder / PROBE_FILE).symlink_to(outside)
    with pytest.raises(FilterError, match=r"hybrid_inference.probe: .* outside the filter folder"):
        load_filter(folder)
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "probe       INVALID: hybrid_inference.probe" in out


def test_a_symlink_inside_the_folder_is_followed(folder, capsys):
    (folder / "probe" / "real.skops").write_bytes((folder / PROBE_FILE).read_bytes())
    (folder / PROBE_FILE).unlink()
    (folder / PROBE_FILE).symlink_to("real.skops")
    assert _info(folder, capsys)[0] == 0


def test_a_config_symlinked_from_outside_is_refused(folder, tmp_path, capsys):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((folder / "config.yaml").read_text())
    (folder / "config.yaml").unlink()
    (folder / "config.yaml").symlink_to(outside)
    with pytest.raises(FilterError, match=r"config.yaml: .* outside the filter folder"):
        load_filter(folder)
    assert _info(folder, capsys)[0] == 2


@pytest.mark.parametrize("adapter", ["/tmp/model", "../model", "model/../../x"])
def test_an_adapter_path_outside_the_folder_is_refused(adapter):
    config = _config(stage2={"base_model": "org/base", "adapter": adapter})
    with pytest.raises(FilterError, match=r"hybrid_inference.stage2.adapter: .*(absolute|leaves)"):
        FilterSpec.from_dict(config)


def test_an_adapter_symlink_that_leaves_the_folder_is_refused(folder, tmp_path, capsys):
    outside = tmp_path / "someone_elses_model"
    outside.mkdir()
    (outside / "adapter_config.json").write_text("{}")
    (folder / "model").symlink_to(outside, target_is_directory=True)
    _set_config(folder, stage2={"base_model": "org/base", "adapter": "model"})
    with pytest.raises(FilterError, match=r"hybrid_inference.stage2.adapter: .* outside the filter folder"):
        load_filter(folder)
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "INVALID: hybrid_inference.stage2.adapter" in out


def test_a_file_in_the_adapter_that_links_outside_is_refused(folder, tmp_path):
    (folder / "model").mkdir()
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"x")
    (folder / "model" / "adapter_model.safetensors").symlink_to(secret)
    _set_config(folder, stage2={"base_model": "org/base", "adapter": "model"})
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    with pytest.raises(FilterError, match="links outside the adapter folder"):
        check_adapter_folder(folder, spec)


def test_a_gguf_file_name_cannot_be_a_path():
    config = _config(stage2={"base_model": "org/base", "gguf_file": "../../etc/passwd"})
    with pytest.raises(FilterError, match=r"stage2.gguf_file: expected a file name"):
        FilterSpec.from_dict(config)


def test_a_symlink_loop_is_an_error_not_a_crash(folder, capsys):
    (folder / PROBE_FILE).unlink()
    (folder / PROBE_FILE).symlink_to("embedding_probe.skops")
    with pytest.raises(FilterError):
        load_filter(folder)
    assert _info(folder, capsys)[0] in (1, 2)


# --- only regular files are opened ------------------------------------------------------


@pytest.mark.parametrize("target", [PROBE_FILE, METADATA_FILE, "config.yaml"])
def test_a_fifo_cannot_hang_the_loader_or_info(folder, capsys, target):
    (folder / target).unlink()
    os.mkfifo(folder / target)  # nobody ever writes: opening it plainly would block
    with deadline(20):
        with pytest.raises(FilterError, match="is a FIFO, not a regular file"):
            load_filter(folder)
        status, out, err = _info(folder, capsys)
    assert status in (1, 2) and "is a FIFO, not a regular file" in out + err


def test_a_probe_that_is_a_folder_is_reported_not_raised(folder, capsys):
    (folder / PROBE_FILE).unlink()
    (folder / PROBE_FILE).mkdir()
    with pytest.raises(FilterError, match="the probe is a folder, not a regular file"):
        load_filter(folder)
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "probe       INVALID:" in out and "is a folder" in out


def test_a_probe_larger_than_the_bound_is_not_read(folder, monkeypatch):
    monkeypatch.setattr(filters._safe_io, "MAX_PROBE_BYTES", 100)
    with pytest.raises(FilterError, match=r"the probe has [\d,]+ bytes, more than the 100 allowed"):
        load_filter(folder)


# --- YAML and text fields are bounded ---------------------------------------------------


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["name: *i", "version: v1", "dimensions: {impact: 1}"]
)


def test_billion_laughs_yaml_is_refused_at_once(folder, capsys):
    assert len(BILLION_LAUGHS) < 1500  # ~9**9 strings once expanded
    (folder / "config.yaml").write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(FilterError, match="anchors and aliases"):
        load_filter(folder)
    status, _, err = _info(folder, capsys)
    assert time.perf_counter() - started < 5
    assert status == 2 and "anchors and aliases" in err


def test_a_lone_anchor_or_a_merge_key_is_refused_too():
    for text in ("name: &n demo\nversion: v1\ndimensions: {a: 1}\n",
                 "base: &b {a: 1}\ndimensions: {<<: *b}\n"):
        with pytest.raises(FilterError, match="anchors and aliases"):
            filters._load_yaml(text.encode(), "config.yaml")


def test_a_config_larger_than_the_bound_is_not_parsed(folder, monkeypatch):
    (folder / "config.yaml").write_text(yaml.safe_dump(_config()) + "#" * (filters.MAX_CONFIG_BYTES + 1))
    with pytest.raises(FilterError, match=r"the config has [\d,]+ bytes, more than the [\d,]+ allowed"):
        load_filter(folder)


def test_deeply_nested_yaml_is_an_error_not_a_crash(folder):
    (folder / "config.yaml").write_text("name: " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(FilterError, match="nested too deeply|not valid YAML"):
        load_filter(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "demo\x1b[2J"}, r"name: holds control characters"),
        ({"description": "x" * (filters.MAX_TEXT_LENGTH + 1)}, r"description: longer than"),
        ({"name": "n" * (filters.MAX_NAME_LENGTH + 1)}, r"name: longer than"),
        ({"dimensions": {"a\u202eb": 1}}, r"dimension name: holds control characters"),
        ({"dimensions": {f"d{i}": 1 for i in range(filters.MAX_DIMENSIONS + 1)}}, r"more than"),
        ({"prefilter": ["not", "a", "mapping"]}, r"prefilter: expected a mapping"),
    ],
)
def test_text_fields_are_bounded(change, message):
    with pytest.raises(FilterError, match=message):
        FilterSpec.from_dict({**_config(), **change})


STAGE2 = {"base_model": "Qwen/Qwen2.5-Coder-0.5B-Instruct", "adapter": "model"}


@pytest.mark.parametrize(
    "hybrid, message",
    [
        ({"stage2_weight": 1.5}, r"stage2_weight: must lie in \[0, 1\], got 1.5"),
        ({"stage2_weight": -0.1}, r"stage2_weight: must lie in \[0, 1\]"),
        ({"stage2_weight": "half"}, r"stage2_weight"),
        ({"stage2": {**STAGE2, "pooling": "max"}}, r"stage2.pooling: expected one of \['last', 'mean', 'last\+mean'\]"),
        ({"stage2": {**STAGE2, "layers": []}}, r"stage2.layers: expected a list of layer indices"),
        ({"stage2": {**STAGE2, "layers": [6, "12"]}}, r"stage2.layers: expected an integer, got '12'"),
        ({"stage2": {**STAGE2, "layers": [6, True]}}, r"stage2.layers: expected an integer, got True"),
    ],
)
def test_stage2_weight_and_head_layout_are_validated(hybrid, message):
    with pytest.raises(FilterError, match=message):
        FilterSpec.from_dict(_config(**hybrid))
    spec = FilterSpec.from_dict(_config(stage2_weight=0.25, stage2={**STAGE2, "pooling": "mean", "layers": [6, -1]}))
    assert spec.hybrid_inference["stage2_weight"] == 0.25
    assert spec.hybrid_inference["stage2"]["layers"] == [6, -1]
    assert FilterSpec.from_dict(_config()).hybrid_inference["stage2_weight"] == 1.0


# --- the probe archive is bounded before skops reads it ---------------------------------


def _archive(members, compression=zipfile.ZIP_DEFLATED):
    """A zip of name -> bytes or (name -> (chunk, repeats)), streamed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            with archive.open(name, "w", force_zip64=True) as member:
                if isinstance(content, tuple):
                    chunk, repeats = content
                    for _ in range(repeats):
                        member.write(chunk)
                else:
                    member.write(content)
    return buffer.getvalue()


def _plant_probe(folder, data):
    (folder / PROBE_FILE).write_bytes(data)
    _write_metadata(folder, data)  # the attacker controls the metadata too


@pytest.fixture
def skops_never_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("skops read the archive before its bounds were checked")

    monkeypatch.setattr(sio, "loads", refuse)
    monkeypatch.setattr(sio, "get_untrusted_types", refuse)


def test_a_zip_bomb_is_refused_without_expanding_it(folder, capsys, skops_never_reads):
    bomb = _archive({"schema.json": b"{}", "bomb.npy": (b"\0" * (1 << 20), 256)})  # 256 MiB
    assert len(bomb) < 2 << 20
    _plant_probe(folder, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(FilterError, match=r"compressed [\d,]+ times, .* \(a zip bomb\?\)"):
            load_probe(folder / PROBE_FILE, read_metadata(folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # far below the 256 MiB it would expand to
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "zip bomb" in out


def test_the_total_uncompressed_size_is_bounded(folder, monkeypatch, skops_never_reads):
    monkeypatch.setattr(filters._safe_io, "MAX_PROBE_UNCOMPRESSED_BYTES", 1 << 20)
    members = {"schema.json": b"{}", "a.npy": os.urandom(600_000), "b.npy": os.urandom(600_000)}
    _plant_probe(folder, _archive(members, zipfile.ZIP_STORED))
    with pytest.raises(FilterError, match=r"would expand to 1,200,002 bytes, more than the 1,048,576"):
        load_probe(folder / PROBE_FILE, read_metadata(folder))


def test_too_many_members_are_refused(folder, monkeypatch, skops_never_reads):
    monkeypatch.setattr(filters._safe_io, "MAX_ARCHIVE_MEMBERS", 5)
    _plant_probe(folder, _archive({f"m{i}": b"" for i in range(6)}))
    with pytest.raises(FilterError, match="the archive has 6 members"):
        load_probe(folder / PROBE_FILE, read_metadata(folder))


def test_an_archive_without_a_schema_is_not_a_probe(folder, skops_never_reads):
    _plant_probe(folder, _archive({"other.json": b"{}"}))
    with pytest.raises(FilterError, match=r"not a skops file \(no schema.json\)"):
        load_probe(folder / PROBE_FILE, read_metadata(folder))


# --- info never tracebacks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ("[1, 2]", "expected a JSON object"),
        ("[" * 100_000, "not valid JSON|nested too deeply"),
        ('{"metrics": [1]}', "metrics must be an object"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_metadata_is_reported(folder, capsys, metadata, expected):
    (folder / METADATA_FILE).write_bytes(metadata.encode("latin-1"))
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "metadata    INVALID" in out
    assert any(word in out for word in expected.split("|"))
    with pytest.raises(FilterError):
        load_filter(folder)


def test_a_malformed_evaluation_is_reported(folder, capsys):
    data = (folder / PROBE_FILE).read_bytes()
    _write_metadata(folder, data, evaluation={"systems": "nonsense"}, evaluation_split={})
    status, out, _ = _info(folder, capsys)
    assert status == 1 and "evaluation  INVALID" in out and "malformed" in out


def test_a_missing_folder_or_config_is_a_clear_error(tmp_path, capsys):
    assert main(["info", "--filter", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["info", "--filter", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_names_are_shown_without_terminal_escapes(folder, capsys):
    data = (folder / PROBE_FILE).read_bytes()
    _write_metadata(folder, data, versions={"evil\x1b[2J": "1\x07"})
    status, out, _ = _info(folder, capsys)
    assert status == 0 and "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J" in out


def test_resolve_in_folder_accepts_paths_inside(tmp_path):
    assert resolve_in_folder(tmp_path, "probe/p.skops", "probe") == (tmp_path / "probe" / "p.skops").resolve()


# --- the score path reads the metadata through the same bounded reader (issue 21, item 6) ---


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_score_refuses_a_metadata_that_is_a_fifo_or_a_device_fast(folder, tmp_path, capsys, kind):
    (folder / METADATA_FILE).unlink()
    if kind == "fifo":
        os.mkfifo(folder / METADATA_FILE)  # nobody writes: a plain open would hang
    else:
        (folder / METADATA_FILE).symlink_to("/dev/zero")  # a plain read grows without end
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "title": "Grid", "content": "A new battery plant."}) + "\n")
    tracemalloc.start()
    try:
        with deadline(20):
            status = main(["score", "--filter", str(folder), "--stage1-only", "--no-progress",
                           "-o", str(tmp_path / "out.jsonl"), str(source)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert status != 0
    assert "metadata.json" in err and ("not a regular file" in err or "links" in err or "leaves" in err)
    assert peak < 64 << 20
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""
