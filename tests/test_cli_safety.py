"""``lmc-ref`` as a tool to trust every day: each reproducer of issue 21, on small inputs.

Writes cannot lie (a short write is an error, an existing file is never
overwritten, a signal leaves no temporary file), only regular files are
inputs, incompressible data is stored, bombs are refused before decoding,
``info`` reads headers only, and the gzip habits (filters, -t, -l, -q/-v,
levels) work.  Real processes are used where the behaviour is the process's:
resource limits, signals, pipes and start-up imports.
"""

import errno
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading

import pytest

from lmc_ref import codec, container, safe_io
from lmc_ref.cli import main

SPEC = "ngram:order=2,mem=10"
TEXT = b"".join(b"%d bottles of beer on the wall, %d bottles of beer.\n" % (i, i) for i in range(99, 0, -1))
RANDOM = random.Random(21).randbytes(200_000)
RUN = dict(capture_output=True, timeout=120)


def python_m(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lmc_ref", *args], **{**RUN, **kwargs})


def one_error_line(err, *fragments):
    if isinstance(err, bytes):
        err = err.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmc-ref: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "beer.txt"
    path.write_bytes(TEXT)
    return path


@pytest.fixture
def big_lmc(tmp_path):
    """A 200 kB file that decodes fast and needs no model: random bytes, stored."""
    path = tmp_path / "big.lmc"
    path.write_bytes(codec.compress(RANDOM, SPEC, progress=False, store=True))
    return path


# ------------------------------------------------------ writes cannot lie ---

def _file_size_limit(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_short_write_to_stdout_exits_1(big_lmc, tmp_path, unbuffered):
    """Reproducer 1: (ulimit -f 100; lmc-ref -d -c big.lmc > out) must not exit 0 with a 102,400-byte out."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    with open(out, "wb") as f:
        proc = subprocess.run([sys.executable, "-m", "lmc_ref", "-d", "-c", str(big_lmc)], stdout=f,
                              stderr=subprocess.PIPE, timeout=120, env=env, preexec_fn=_file_size_limit(102_400))
    assert proc.returncode == 1
    one_error_line(proc.stderr, "big.lmc", "File too large")
    assert out.stat().st_size == 102_400 and big_lmc.exists()


def test_short_write_to_a_file_leaves_nothing(big_lmc, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmc_ref", "-d", "-o", str(tmp_path / "out"), str(big_lmc)],
                          **RUN, preexec_fn=_file_size_limit(102_400))
    assert proc.returncode == 1
    one_error_line(proc.stderr, "File too large")
    assert names(tmp_path) == ["big.lmc"]


def test_write_all_checks_every_count(monkeypatch):
    writes = []

    def short(fd, view):
        writes.append(len(view))
        return 0 if len(writes) > 1 else 3

    monkeypatch.setattr(safe_io.os, "write", short)
    with pytest.raises(OSError, match="short write"):
        safe_io.write_all(99, b"0123456789", "test")
    assert writes == [10, 7]


def _appears_meanwhile(path, content):
    """An os.fsync that, like a second lmc-ref finishing first, creates ``path`` as the temp file is synced."""
    real = os.fsync

    def fsync(fd):
        real(fd)
        if not path.exists():
            path.write_bytes(content)
    return fsync


@pytest.mark.parametrize("links", [True, False], ids=["link", "no-hard-links"])
def test_concurrent_writer_is_never_overwritten(text_file, monkeypatch, capsys, links):
    """Reproducer 4: the output name taken while we write: we report it and keep our input."""
    target = text_file.with_name("beer.txt.lmc")
    monkeypatch.setattr(safe_io.os, "fsync", _appears_meanwhile(target, b"the other writer's data"))
    if not links:
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(safe_io.os, "link", no_link)
    assert main(["--model", SPEC, str(text_file)]) == 1
    one_error_line(capsys.readouterr().err, "already exists")
    assert target.read_bytes() == b"the other writer's data" and text_file.read_bytes() == TEXT
    assert names(text_file.parent) == ["beer.txt", "beer.txt.lmc"]  # no temporary file left


def test_without_hard_links_output_is_still_written(text_file, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(safe_io.os, "link", no_link)
    assert main(["--model", SPEC, str(text_file)]) == 0
    assert names(text_file.parent) == ["beer.txt.lmc"]
    assert codec.decompress(text_file.with_name("beer.txt.lmc").read_bytes()) == TEXT


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_write_cleans_up(text_file, monkeypatch, capsys, signum):
    """Reproducer 3: SIGTERM or SIGHUP while the output is written leaves no hidden .tmp file."""
    monkeypatch.setattr(safe_io.os, "fsync", lambda fd: signal.raise_signal(signum))
    before = signal.getsignal(signum)
    assert main(["--model", SPEC, str(text_file)]) == 128 + signum
    assert names(text_file.parent) == ["beer.txt"] and text_file.read_bytes() == TEXT
    assert signal.getsignal(signum) == before  # the handler is ours only while main runs
    assert signal.Signals(signum).name in capsys.readouterr().err


def test_sigterm_from_outside_cleans_up(tmp_path):
    """The same in a real process, the signal sent by another process while the temp file exists."""
    source = tmp_path / "data.txt"
    source.write_bytes(TEXT)
    script = (f"import os, signal, sys, time; from lmc_ref import safe_io; from lmc_ref.cli import main\n"
              f"real = os.fsync\n"
              f"def slow(fd):\n"
              f"    real(fd); print('writing', flush=True); time.sleep(60)\n"
              f"safe_io.os.fsync = slow\n"
              f"sys.exit(main(['--model', {SPEC!r}, {str(source)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert names(tmp_path) == ["data.txt"]


# --------------------------------------------------- only regular inputs ---

def _refused(capsys, path, *fragments, command=("--model", SPEC)):
    assert main([*command, str(path)]) == 1
    one_error_line(capsys.readouterr().err, str(path), *fragments)


def test_fifo_is_refused_and_kept(tmp_path, capsys):
    """Reproducer 2: a FIFO is neither read (it would block) nor deleted without -f."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(capsys, fifo, "FIFO", "-f")
    _refused(capsys, fifo, "FIFO", command=("info",))
    assert names(tmp_path) == ["pipe"]


def test_forced_fifo_is_read_and_never_deleted(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as f:
            f.write(TEXT)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert main(["-f", "--model", SPEC, str(fifo)]) == 0
    thread.join(timeout=30)
    assert names(tmp_path) == ["pipe", "pipe.lmc"]
    assert codec.decompress((tmp_path / "pipe.lmc").read_bytes()) == TEXT


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_node_is_refused_and_kept(tmp_path, capsys):
    node = tmp_path / "nulldev"
    os.mknod(node, 0o600 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
    _refused(capsys, node, "character device")
    assert names(tmp_path) == ["nulldev"]
    assert main(["-f", "--model", SPEC, str(node)]) == 0  # forced: read (empty), and still not deleted
    assert names(tmp_path) == ["nulldev", "nulldev.lmc"]


def test_socket_and_directory_are_refused(tmp_path, capsys):
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        _refused(capsys, sock_path, "socket")
    folder = tmp_path / "folder"
    folder.mkdir()
    _refused(capsys, folder, "directory")
    assert main(["-f", "--model", SPEC, str(folder)]) == 1  # even forced
    capsys.readouterr()
    assert names(tmp_path) == ["folder", "s"]


def test_info_refuses_dev_zero(capsys):
    """Reproducer 5: ``info /dev/zero`` read until memory ran out."""
    assert main(["info", "/dev/zero"]) == 1
    one_error_line(capsys.readouterr().err, "/dev/zero", "character device")


# ------------------------------------------------------- mode, mtime, -o - ---

def test_mode_and_mtime_are_kept_both_ways(text_file):
    text_file.chmod(0o640)
    os.utime(text_file, ns=(1_000_000_000 * 10**9, 1_000_000_123 * 10**9))
    assert main(["--model", SPEC, str(text_file)]) == 0
    packed = text_file.with_name("beer.txt.lmc")
    assert packed.stat().st_mtime_ns == 1_000_000_123 * 10**9 and packed.stat().st_mode & 0o777 == 0o640
    assert main(["-d", str(packed)]) == 0
    assert text_file.stat().st_mtime_ns == 1_000_000_123 * 10**9 and text_file.stat().st_mode & 0o777 == 0o640


def test_output_dash_is_stdout(text_file, capsysbinary):
    assert main(["--model", SPEC, "-o", "-", str(text_file)]) == 0
    assert codec.decompress(capsysbinary.readouterr().out) == TEXT
    assert names(text_file.parent) == ["beer.txt"]  # -o - keeps the input, like -c


# ------------------------------------------------------------ stored files ---

def test_random_bytes_are_stored_and_info_says_so(tmp_path, capsys):
    """Reproducer 6: 200,000 random bytes grew to 104.86 % with the default model."""
    path = tmp_path / "random.bin"
    path.write_bytes(RANDOM)
    assert main(["-k", str(path)]) == 0
    packed = tmp_path / "random.bin.lmc"
    assert packed.stat().st_size <= 1.001 * len(RANDOM)
    assert main(["info", str(packed)]) == 0
    out = capsys.readouterr().out
    assert "stored" in out and "100.03 %" in out
    assert main(["info", "--json", str(packed)]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert fields["stored"] is True and fields["original_length"] == len(RANDOM)
    assert fields["payload_length"] == len(RANDOM) and fields["predictor_spec"].startswith("ngram:v=1")
    path.unlink()
    assert main(["-d", str(packed)]) == 0 and path.read_bytes() == RANDOM


# -------------------------------------------------- bombs, bounded reads ---

def test_max_output_refuses_early(big_lmc, capsys):
    assert main(["-d", "-k", "--max-output", "100k", str(big_lmc)]) == 1
    one_error_line(capsys.readouterr().err, "more than the limit of 100000")
    assert names(big_lmc.parent) == ["big.lmc"]
    assert main(["-d", "-k", "--max-output", "200k", str(big_lmc)]) == 0


def test_bomb_header_is_refused_before_anything_is_built(tmp_path, capsys, monkeypatch):
    """Reproducer 5: a 1,000-byte payload claiming 367,772,293 bytes decoded for 13 minutes."""
    import lmc_ref.blocks as blocks_module

    payload = random.Random(5).randbytes(1000)
    bomb = tmp_path / "bomb.lmc"
    bomb.write_bytes(container.pack(container.Header(spec="cm:v=7,mem=10", backend="cpu", length=367_772_293,
                                                     crc32=0), payload))
    monkeypatch.setattr(blocks_module, "make_predictor", lambda *a, **k: pytest.fail("built the model"))
    assert main(["-d", str(bomb)]) == 1
    one_error_line(capsys.readouterr().err, "can hold at most")


def test_info_reads_the_header_only(tmp_path, capsys, monkeypatch):
    """A header claiming a 2 GiB payload over a sparse 2 GiB file: info answers from a 1 kB read."""
    body = container.pack_header(container.Header(spec="ngram", backend="cpu", length=1 << 31, crc32=0,
                                                  flags=container.FLAG_STORED), 1 << 31)
    path = tmp_path / "huge.lmc"
    with open(path, "wb") as f:
        f.write(body)
        f.truncate(len(body) + (1 << 31))
    reads = []
    real = safe_io.Input.read
    monkeypatch.setattr(safe_io.Input, "read", lambda self, limit=None: reads.append(limit) or real(self, limit))
    assert main(["info", str(path)]) == 0
    assert f"{1 << 31} bytes" in capsys.readouterr().out
    assert reads == [container.MAX_HEADER_LENGTH]
    assert main(["-l", str(path)]) == 0
    assert "huge (stored)" in capsys.readouterr().out


# ---------------------------------------------------------- gzip habits ---

def test_filter_without_file_both_directions(tmp_path):
    """Reproducer 8: ``cat f | lmc-ref > f.lmc`` printed the help; ``lmc-ref -d < f.lmc`` failed."""
    packed = python_m(input=TEXT, cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    assert codec.decompress(packed.stdout) == TEXT
    unpacked = python_m("-d", input=packed.stdout, cwd=tmp_path)
    assert unpacked.returncode == 0 and unpacked.stdout == TEXT
    listed = python_m("info", input=packed.stdout, cwd=tmp_path)
    assert listed.returncode == 0 and b"(stdin)" in listed.stdout
    assert names(tmp_path) == []


def test_level_options(text_file, capsys):
    """Reproducer 8: ``lmc-ref -9 FILE`` answered "-9: No such file or directory"."""
    assert main(["-1", "-k", str(text_file)]) == 0
    assert container.unpack(text_file.with_name("beer.txt.lmc").read_bytes())[0].spec == "ngram:v=1,order=1,mem=16"
    assert container.unpack(_stdout_bytes(text_file, "-7"))[0].spec == "cm:v=7,mem=18"  # a real process
    assert main(["compress", "--help"]) == 0
    out = capsys.readouterr().out
    for level in range(1, 10):
        assert f"  -{level}  " in out
    assert "cm:mem=22" in out


def _stdout_bytes(path, *args):
    proc = python_m(*args, "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_test_option_writes_nothing(big_lmc, tmp_path, capsys):
    assert main(["-t", "-v", str(big_lmc)]) == 0
    assert "OK" in capsys.readouterr().err
    assert names(tmp_path) == ["big.lmc"]
    damaged = bytearray(big_lmc.read_bytes())
    damaged[-1] ^= 1
    big_lmc.write_bytes(bytes(damaged))
    assert main(["-t", str(big_lmc)]) == 1
    one_error_line(capsys.readouterr().err, "CRC-32")
    assert names(tmp_path) == ["big.lmc"]


def test_list_option(big_lmc, text_file, capsys):
    assert main(["-k", "--model", SPEC, str(text_file)]) == 0
    small = text_file.with_name("beer.txt.lmc")
    assert main(["-l", str(small), str(big_lmc)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["compressed", "uncompressed", "rate", "uncompressed_name"]
    coded = small.stat().st_size
    assert lines[1].split() == [str(coded), str(len(TEXT)), f"{100 * coded / len(TEXT):.2f}", "%",
                                str(text_file)]
    assert lines[2].endswith("big (stored)") and "(totals)" in lines[3]


def test_quiet_and_verbose(text_file, capsys):
    assert main(["-v", "-k", "--model", SPEC, str(text_file)]) == 0
    err = capsys.readouterr().err
    assert f"{len(TEXT)} -> " in err and "beer.txt.lmc" in err
    assert main(["-q", "-f", "-k", "--model", SPEC, str(text_file)]) == 0
    assert capsys.readouterr().err == ""


def test_developer_switches_are_hidden_but_work(text_file, capsysbinary):
    assert main(["compress", "--help"]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert "--path" not in out and "--backend" in out and "--max-output" in out
    assert main(["decompress", "--help"]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert "--path" not in out and "--backend" not in out
    assert main(["-k", "--path", "readable", "--model", SPEC, str(text_file)]) == 0
    assert main(["decompress", "-c", "--backend", "cpu", "--path", "readable",
                 str(text_file.with_name("beer.txt.lmc"))]) == 0
    assert capsysbinary.readouterr().out == TEXT


# ------------------------------------------------------------- fast start ---

HEAVY = ("numpy", "numba", "tqdm", "matplotlib")


@pytest.mark.parametrize("argv", [["--help"], ["info", "FILE"], ["-l", "FILE"], ["compress", "--bogus"],
                                  ["-d", "--max-output", "x", "FILE"]])
def test_light_commands_import_nothing_heavy(big_lmc, argv):
    """Reproducer 7: ``lmc-ref --help`` took 0.83 s, loading NumPy and Numba for nothing."""
    argv = [str(big_lmc) if a == "FILE" else a for a in argv]
    script = ("import sys\nfrom lmc_ref.cli import main\ncode = main(sys.argv[1:])\n"
              f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script, *argv], **RUN)
    assert proc.stdout.decode().strip().splitlines()[-1] == "[]", proc.stdout
    assert proc.returncode in (0, 2)


# ------------------------------------------------------ round-trip property ---

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

inputs = st.one_of(
    st.binary(max_size=2000),                                        # mostly incompressible: stored
    st.binary(min_size=1, max_size=40).map(lambda b: b * 50),        # repetitive: coded
    st.integers(0, 3000).map(lambda n: random.Random(n).randbytes(n)),
)
specs = st.sampled_from(["ngram:order=3,mem=10", "cm:mem=10"])


@given(data=inputs, spec=specs)
def test_api_round_trip_with_stored_fallback(data, spec):
    blob = codec.compress(data, spec, progress=False, store=True)
    header, payload = container.unpack(blob)
    assert codec.decompress(blob) == data
    if header.stored:  # only where coding did not pay; then the bytes are kept as they are
        assert payload == data and len(codec.compress(data, spec, progress=False)) - len(blob) >= 0
    else:
        assert len(payload) < len(data)


@given(data=inputs, spec=specs)
def test_cli_round_trip(data, spec):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.bin"
        path.write_bytes(data)
        assert main(["-q", "--model", spec, str(path)]) == 0
        assert main(["-t", str(path) + ".lmc"]) == 0
        assert main(["-d", str(path) + ".lmc"]) == 0
        assert path.read_bytes() == data and names(Path(folder)) == ["x.bin"]


def test_every_train_option_has_help_text():
    from lmc_ref.cli import build_parser

    parser = build_parser("train")
    train = parser._subparsers._group_actions[0].choices["train"]
    options = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 15
    assert all(a.help and a.help.strip() for a in options), [a.dest for a in options if not a.help]


def test_predictor_modules_load_by_name(monkeypatch):
    """The registry is a table of module names; a missing module is an unknown predictor, not an ImportError."""
    from lmc_ref import predictors

    assert predictors.MODULES["llm"] == "lmc_ref.predictors.llm"
    monkeypatch.setitem(predictors.MODULES, "ghost", "lmc_ref.predictors.no_such_module")
    assert "ghost" not in predictors.available()
    for call in (lambda: predictors.make_predictor("ghost:x=1"), lambda: predictors.predictor_class("ghost")):
        with pytest.raises(ValueError, match="unknown predictor 'ghost'"):
            call()
    proc = subprocess.run([sys.executable, "-c", "import json, sys; from lmc_ref import predictors; "
                           "predictors.make_predictor('ngram:mem=10'); "
                           "print(json.dumps([m for m in sys.modules if m.startswith('lmc_ref.predictors.')]))"],
                          **RUN)
    loaded = [name.rsplit(".", 1)[1] for name in json.loads(proc.stdout)]
    assert "ngram" in loaded and "context_mixing" not in loaded and "transformer" not in loaded


def test_no_store_switch_codes_anyway(tmp_path, capsysbinary):
    """``--no-store`` (hidden, for developers): the model's own code, even where it is larger."""
    path = tmp_path / "random.bin"
    path.write_bytes(RANDOM[:20_000])
    assert main(["-c", "--no-store", "--model", SPEC, str(path)]) == 0
    header, payload = container.unpack(capsysbinary.readouterr().out)
    assert not header.stored and len(payload) > 20_000
    assert main(["-c", "--model", SPEC, str(path)]) == 0
    assert container.unpack(capsysbinary.readouterr().out)[0].stored
