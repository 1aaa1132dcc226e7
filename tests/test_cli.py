"""The ``lmc-ref`` command line, run in-process via ``main(argv)``, plus real ``python -m`` pipes.

What a user relies on: round trips restore the bytes; nothing existing is
overwritten without ``-f``; a failure never leaves a partial or temporary file
and never deletes the input; errors are one line ``lmc-ref: FILE: message`` with
exit status 1, never a traceback.
"""

import io
import subprocess
import sys

import pytest

from lmc_ref import cli, codec, container, safe_io
from lmc_ref.cli import main

SPEC = "ngram:order=2"
DATA = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(60))


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.txt"
    path.write_bytes(DATA)
    return path


def lmc(path):
    return path.with_name(path.name + ".lmc")


def one_error_line(err, *fragments):
    """stderr holds exactly one ``lmc-ref: ...`` line containing every fragment."""
    if isinstance(err, bytes):
        err = err.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmc-ref: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------- round trips ---

def test_round_trip_deletes_inputs_by_default(sample):
    assert main(["compress", "--model", SPEC, str(sample)]) == 0
    assert not sample.exists() and lmc(sample).exists()
    assert codec.decompress(lmc(sample).read_bytes()) == DATA
    assert main(["decompress", str(lmc(sample))]) == 0
    assert sample.read_bytes() == DATA and not lmc(sample).exists()


@pytest.mark.parametrize("decompress_args", [["compress", "-d"], ["-d"], ["--decompress"]])
def test_gzip_style_invocations(sample, decompress_args):
    assert main(["--model", SPEC, "-k", str(sample)]) == 0  # "lmc-ref FILE" compresses
    sample.unlink()
    assert main(decompress_args + [str(lmc(sample))]) == 0
    assert sample.read_bytes() == DATA and not lmc(sample).exists()


def test_keep(sample):
    assert main(["compress", "-k", "--model", SPEC, str(sample)]) == 0
    assert sample.read_bytes() == DATA and lmc(sample).exists()
    sample.unlink()
    assert main(["decompress", "--keep", str(lmc(sample))]) == 0
    assert sample.read_bytes() == DATA and lmc(sample).exists()


def test_stdout_writes_no_file(sample, capsysbinary):
    assert main(["compress", "-c", "--model", SPEC, str(sample)]) == 0
    out = capsysbinary.readouterr().out
    assert codec.decompress(out) == DATA
    assert files_in(sample.parent) == [sample.name]  # input kept, nothing written
    lmc(sample).write_bytes(out)
    assert main(["decompress", "--stdout", str(lmc(sample))]) == 0
    assert capsysbinary.readouterr().out == DATA
    assert lmc(sample).exists()


def test_stdin_to_stdout(monkeypatch, capsysbinary):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(DATA)))
    assert main(["compress", "--model", SPEC, "-"]) == 0
    packed = capsysbinary.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed)))
    assert main(["-d", "-"]) == 0
    assert capsysbinary.readouterr().out == DATA


def test_stdin_to_output_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(DATA)))
    target = tmp_path / "from-stdin.lmc"
    assert main(["compress", "--model", SPEC, "-o", str(target), "-"]) == 0
    assert codec.decompress(target.read_bytes()) == DATA


def test_explicit_output_and_readable_path(sample, tmp_path):
    target = tmp_path / "elsewhere.bin"
    assert main(["compress", "-k", "--path", "readable", "--model", SPEC, "-o", str(target), str(sample)]) == 0
    assert main(["compress", "-k", "--model", SPEC, "-c", str(sample)]) == 0  # same bytes either path
    restored = tmp_path / "restored"
    assert main(["decompress", "-k", "-o", str(restored), str(target)]) == 0
    assert restored.read_bytes() == DATA


def test_paths_emit_identical_files(sample, capsysbinary):
    outputs = []
    for path in ("fused", "readable"):
        assert main(["compress", "-c", "--path", path, "--model", SPEC, str(sample)]) == 0
        outputs.append(capsysbinary.readouterr().out)
    assert outputs[0] == outputs[1]


def test_output_keeps_input_permissions(sample):
    sample.chmod(0o640)
    assert main(["compress", "-k", "--model", SPEC, str(sample)]) == 0
    assert lmc(sample).stat().st_mode & 0o777 == 0o640


def test_several_files_continue_after_an_error(tmp_path, capsys):
    good = tmp_path / "good"
    good.write_bytes(DATA)
    assert main(["compress", "--model", SPEC, str(tmp_path / "missing"), str(good)]) == 1
    one_error_line(capsys.readouterr().err, "missing")
    assert lmc(good).exists()


def test_progress_flags(sample, capsys):
    """``--progress`` draws a tqdm bar on stderr even for a small file; ``--no-progress`` and the
    default (stderr is no terminal here) draw none."""
    assert main(["compress", "-k", "--no-progress", "--model", SPEC, str(sample)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["decompress", "-f", "--progress", str(lmc(sample))]) == 0
    err = capsys.readouterr().err
    assert "decompress:" in err and "%|" in err and "B/s]" in err  # tqdm's bar: label, percentage, rate
    assert sample.read_bytes() == DATA
    assert main(["compress", "-f", "-k", "--model", SPEC, str(sample)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["compress", "-f", "-k", "--progress", "--model", SPEC, str(sample)]) == 0
    err = capsys.readouterr().err
    assert "\rcompress:" in err and "B/s]" in err


# ------------------------------------------------------------- overwriting ---

def test_refuses_to_overwrite_without_force(sample, capsys):
    lmc(sample).write_bytes(b"precious")
    assert main(["compress", "--model", SPEC, str(sample)]) == 1
    one_error_line(capsys.readouterr().err, str(sample), "already exists", "-f")
    assert lmc(sample).read_bytes() == b"precious" and sample.read_bytes() == DATA
    assert main(["compress", "-f", "--model", SPEC, str(sample)]) == 0
    assert codec.decompress(lmc(sample).read_bytes()) == DATA and not sample.exists()


def test_decompress_refuses_to_overwrite(sample, capsys):
    assert main(["compress", "-k", "--model", SPEC, str(sample)]) == 0
    sample.write_bytes(b"newer")
    assert main(["decompress", str(lmc(sample))]) == 1
    one_error_line(capsys.readouterr().err, "already exists")
    assert sample.read_bytes() == b"newer" and lmc(sample).exists()


def test_output_may_not_be_the_input(sample, capsys):
    assert main(["compress", "-k", "-f", "--model", SPEC, "-o", str(sample), str(sample)]) == 1
    one_error_line(capsys.readouterr().err, "input")
    assert sample.read_bytes() == DATA


def test_compressing_an_lmc_file_needs_force(sample, capsys):
    assert main(["compress", "--model", SPEC, str(sample)]) == 0
    assert main(["compress", "--model", SPEC, str(lmc(sample))]) == 1
    one_error_line(capsys.readouterr().err, ".lmc")


def test_refuses_compressed_data_on_a_terminal(sample, monkeypatch, capsysbinary):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["compress", "-c", "--model", SPEC, str(sample)]) == 1
    captured = capsysbinary.readouterr()
    one_error_line(captured.err, "terminal", "-f")
    assert captured.out == b""
    assert main(["compress", "-c", "-f", "--model", SPEC, str(sample)]) == 0
    assert codec.decompress(capsysbinary.readouterr().out) == DATA


# ---------------------------------------------------------------- failures ---

def test_corrupt_file_leaves_nothing_behind(sample, capsys):
    assert main(["compress", "--model", SPEC, str(sample)]) == 0
    blob = bytearray(lmc(sample).read_bytes())
    blob[-40] ^= 0xFF  # payload damage: caught by the CRC-32 after decoding
    lmc(sample).write_bytes(bytes(blob))
    assert main(["decompress", str(lmc(sample))]) == 1
    one_error_line(capsys.readouterr().err, str(lmc(sample)), "CRC-32")
    assert files_in(sample.parent) == [lmc(sample).name]


@pytest.mark.parametrize("content", [b"", b"not an lmc file at all", b"\x89LMC\x01\x00\xff\xff"])
def test_foreign_file_is_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "bad.lmc"
    bad.write_bytes(content)
    assert main(["decompress", str(bad)]) == 1
    one_error_line(capsys.readouterr().err, "bad.lmc")
    assert files_in(tmp_path) == ["bad.lmc"]
    assert main(["info", str(bad)]) == 1
    one_error_line(capsys.readouterr().err, "bad.lmc")


def test_missing_file(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "nope")]) == 1
    one_error_line(capsys.readouterr().err, "nope", "No such file")
    assert main(["decompress", str(tmp_path / "nope.lmc")]) == 1
    one_error_line(capsys.readouterr().err, "nope.lmc")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("spec", ["nosuchmodel", "ngram:order=abc", "ngram:order", "ngram:bogus=1", ""])
def test_bad_model_spec(sample, capsys, spec):
    assert main(["compress", "--model", spec, str(sample)]) == 1
    one_error_line(capsys.readouterr().err, str(sample))
    assert files_in(sample.parent) == [sample.name]


def test_decompress_needs_lmc_suffix(sample, capsysbinary):
    assert main(["compress", "-c", "--model", SPEC, str(sample)]) == 0
    odd = sample.with_name("odd.bin")
    odd.write_bytes(capsysbinary.readouterr().out)
    assert main(["decompress", str(odd)]) == 1
    one_error_line(capsysbinary.readouterr().err, "odd.bin", ".lmc", "-o")
    assert odd.exists()
    assert main(["decompress", "-c", str(odd)]) == 0
    assert capsysbinary.readouterr().out == DATA


def test_write_failure_cleans_temp_and_keeps_input(sample, monkeypatch, capsys):
    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_io.os, "link", broken_replace)  # the final step without -f
    monkeypatch.setattr(safe_io.os, "replace", broken_replace)  # ... and with it
    assert main(["compress", "--model", SPEC, str(sample)]) == 1
    one_error_line(capsys.readouterr().err, "No space left")
    assert files_in(sample.parent) == [sample.name]


def test_interrupt_exits_130_and_cleans_up(sample, monkeypatch, capsys):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(safe_io.os, "link", interrupted)
    assert main(["compress", "--model", SPEC, str(sample)]) == 130
    assert files_in(sample.parent) == [sample.name]


# ------------------------------------------------------------ usage, info ---

@pytest.mark.parametrize("argv", [
    [],
    ["compress"],
    ["-d"],  # no FILE, and stdin is a terminal: nothing to read
    ["compress", "-o", "x", "a", "b"],
    ["compress", "-o", "x", "-c", "a"],
    ["compress", "--path", "warp", "a"],
    ["compress", "-9", "--model", "cm", "a"],
    ["compress", "-t", "-c", "a"],
    ["compress", "-q", "-v", "a"],
    ["decompress", "--max-output", "lots", "a"],
])
def test_usage_errors_exit_2(argv, capsys, monkeypatch):
    monkeypatch.setattr(safe_io, "stdin_is_terminal", lambda: True)
    assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_help_lists_models_and_spec_syntax(capsys):
    assert main(["compress", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("ngram", "order=6,mem=20", "--keep", "--force", "--stdout", "--model", "delete"):
        assert text in out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "compress" in out and "decompress" in out and "info" in out


def test_info(sample, capsys):
    assert main(["compress", "-k", "--model", SPEC, str(sample)]) == 0
    blob = lmc(sample).read_bytes()
    header, payload = container.unpack(blob)
    assert main(["info", str(lmc(sample))]) == 0
    out = capsys.readouterr().out
    assert header.spec in out and header.spec.startswith("ngram:v=1,order=2")
    assert f"{len(DATA)} bytes" in out
    assert f"0x{header.crc32:08x}" in out
    assert "(none: adaptive model)" in out
    assert f"{len(payload)} bytes" in out
    assert "bits/byte" in out and "%" in out


# ------------------------------------------------------- train, experiments ---

TRAIN_ARGS = ["--config", "200K", "--seq-len", "16", "--batch", "2", "--train-bytes", "4000", "--val-chunks", "1",
              "--steps", "2", "--no-progress"]


def test_train_is_a_command_of_the_main_parser(capsys):
    assert main(["--help"]) == 0
    commands = capsys.readouterr().out.split("commands:")[1]
    assert "train" in commands and "experiment" in commands
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmc-ref train")
    for flag in ("--config", "--steps", "--minutes", "--seq-len", "--resume", "--curve", "--no-progress"):
        assert flag in out
    assert main(["train", "--config", "200K"]) == 2  # neither --steps nor --minutes
    assert "one of the arguments --minutes --steps is required" in capsys.readouterr().err


def test_train_through_the_cli_equals_the_module(tmp_path, capsys, monkeypatch):
    from lmc_ref.transformer import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the model store copies checkpoints there
    data = tmp_path / "data.bin"
    data.write_bytes(DATA * 2)
    assert main(["train", *TRAIN_ARGS, "--data", str(data), "--out", str(tmp_path / "a.npz")]) == 0
    via_cli = capsys.readouterr().out.splitlines()
    assert train.main([*TRAIN_ARGS, "--data", str(data), "--out", str(tmp_path / "b.npz")]) == 0
    via_module = capsys.readouterr().out.splitlines()
    hashes = [line for line in via_cli + via_module if line.startswith("model hash ")]
    assert len(hashes) == 2 and hashes[0] == hashes[1]


def test_train_failure_is_one_line(tmp_path, capsys):
    assert main(["train", *TRAIN_ARGS, "--data", str(tmp_path / "missing")]) == 1
    one_error_line(capsys.readouterr().err, "lmc-ref: train:", "missing")


def test_experiments_share_one_signature():
    """The CLI calls every experiment in the table alike (``cli.EXPERIMENT_OPTIONS``, by keyword)."""
    import inspect

    from lmc_ref.experiments import EXPERIMENTS, experiment_function

    assert set(EXPERIMENTS) == {"table1", "scaling", "context", "in_context", "tokenization", "generate"}
    for name in EXPERIMENTS:
        params = inspect.signature(experiment_function(name)).parameters
        assert next(iter(params)) == "outdir", name
        for key in (*cli.EXPERIMENT_OPTIONS, "log"):
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
    table1 = inspect.signature(experiment_function("table1")).parameters
    assert all(table1[key].kind is inspect.Parameter.KEYWORD_ONLY for key in cli.TABLE1_OPTIONS)


@pytest.mark.parametrize("name", ["scaling", "context", "in_context", "tokenization", "generate", "table1"])
def test_experiments_dispatch_through_the_table(name, tmp_path, monkeypatch, capsys):
    import importlib

    from lmc_ref.experiments import EXPERIMENTS

    calls = []

    def fake(outdir, **options):
        calls.append((outdir, options))
        (tmp_path / "table1.md").write_text("| the table |\n")

    monkeypatch.setattr(importlib.import_module(f"lmc_ref.experiments.{EXPERIMENTS[name].module}"), "experiment", fake)
    argv = ["reproduce"] if name == "table1" else ["experiment", name]
    assert main([*argv, "--out", str(tmp_path), "--seed", "3", "--no-progress"]) == 0
    [(outdir, options)] = calls
    assert outdir == str(tmp_path) and callable(options.pop("log"))
    expected = {"text": None, "quick": False, "workers": None, "seed": 3, "progress": False}
    if name == "table1":
        assert set(options) == set(expected) | set(cli.TABLE1_OPTIONS)
        assert capsys.readouterr().out == "| the table |\n"  # reproduce prints the table it wrote
    else:
        assert options == expected


# ------------------------------------------------------ real process pipes ---

def test_python_m_pipe_round_trip(tmp_path):
    """``python -m lmc_ref`` as a filter: stdin -> stdout in both directions."""
    run = dict(capture_output=True, timeout=300, cwd=tmp_path)
    packed = subprocess.run([sys.executable, "-m", "lmc_ref", "compress", "--model", SPEC, "-"],
                            input=DATA, **run)
    assert packed.returncode == 0, packed.stderr
    unpacked = subprocess.run([sys.executable, "-m", "lmc_ref", "-d", "-"], input=packed.stdout, **run)
    assert unpacked.returncode == 0 and unpacked.stdout == DATA
    broken = subprocess.run([sys.executable, "-m", "lmc_ref", "-d", "-"], input=packed.stdout[:-5], **run)
    assert broken.returncode == 1 and broken.stdout == b""
    one_error_line(broken.stderr, "(stdin)")
    assert files_in(tmp_path) == []
