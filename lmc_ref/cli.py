"""The ``lmc-ref`` command: gzip-style ``compress``, ``decompress`` and ``info`` for ``.lmc`` files.

Usage mirrors gzip where it can::

    lmc-ref compress notes.txt            # -> notes.txt.lmc, notes.txt removed
    lmc-ref decompress notes.txt.lmc      # -> notes.txt, notes.txt.lmc removed
    lmc-ref -d -k notes.txt.lmc           # the same, keeping the input
    cat notes.txt | lmc-ref - > notes.lmc # stdin -> stdout
    lmc-ref info notes.txt.lmc            # print the header

Every output is written to a temporary file next to its destination and
renamed into place only once complete, so a failure or Ctrl-C never leaves a
partial file behind; an input is deleted only after its output is in place.
"""

import argparse
import os
import stat
import sys
import tempfile
import textwrap
from pathlib import Path

from . import __version__, codec, container, models
from .experiments import EXPERIMENTS
from .experiments import run as run_experiment
from .predictors import available, parse_spec, predictor_class
from .progress import PROGRESS_THRESHOLD
from .transformer import train as _train

SUFFIX = ".lmc"
COMMANDS = ("compress", "decompress", "info", "reproduce", "experiment", "train", "models")
STDIN = "-"

DESCRIPTION = """\
Lossless compression with a predictive model and an arithmetic coder
(a reference implementation of "Language Modeling Is Compression").

"lmc-ref FILE" is short for "lmc-ref compress FILE", and "lmc-ref -d FILE.lmc"
for "lmc-ref decompress FILE.lmc". Run "lmc-ref COMMAND --help" for options."""

SPEC_HELP = """\
model spec strings (--model SPEC):
  A spec is NAME or NAME:key=value,key=value, e.g. "ngram:order=6,mem=20".
  Parameters left out take their defaults. The .lmc header records the full
  canonical spec (and a hash of any trained weights), so decompression needs no
  options, and it rebuilds the same model, using the same memory, as compression."""


def _models_help():
    """The epilog of ``compress --help``: spec syntax plus every registered predictor."""
    lines = [SPEC_HELP, "", f"available predictors (default: {codec.DEFAULT_SPEC}):"]
    for name in available():
        lines.append(f"  {name}")
        for line in predictor_class(name).help_text().strip().splitlines():
            lines.extend(textwrap.wrap(line, 79, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def build_parser():
    """Build the argparse parser with its ``compress``, ``decompress`` and ``info`` subcommands."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="lmc-ref", description=DESCRIPTION, formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    io = argparse.ArgumentParser(add_help=False)
    io.add_argument("files", nargs="+", metavar="FILE",
                    help='input file(s); "-" reads standard input and writes standard output')
    io.add_argument("-c", "--stdout", action="store_true",
                    help="write to standard output; never delete the input")
    io.add_argument("-k", "--keep", action="store_true",
                    help="keep the input file; by default, like gzip, an input file is deleted "
                         "once its output has been written completely (never with -c or stdin)")
    io.add_argument("-f", "--force", action="store_true",
                    help="overwrite existing output files (and write compressed data to a terminal)")
    io.add_argument("-o", "--output", metavar="PATH",
                    help="write the output to PATH instead of the default name (one FILE only)")
    io.add_argument("--path", choices=("fused", "readable"), default="fused",
                    help="advanced: coding loop to run; 'fused' (compiled, default) and "
                         "'readable' (plain Python, slow) produce identical bytes")
    io.add_argument("--backend", choices=("cpu", "cuda"), default=None,
                    help="numeric backend: 'cpu' (default) or 'cuda' (the transformer on a GPU, many "
                         "chunks at once); recorded in the file, and decompression must use the same "
                         "one (it reads it from the header)")
    io.add_argument("--model-dir", metavar="DIR", action="append", dest="model_dirs", type=_model_dir,
                    help=MODEL_DIR_HELP)
    io.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show a progress bar on stderr (default: on a terminal, for inputs over "
                         f"{PROGRESS_THRESHOLD >> 20} MB)")

    comp = commands.add_parser(
        "compress", parents=[io], formatter_class=raw, epilog=_models_help(),
        help="compress FILE to FILE.lmc", description="Compress each FILE to FILE.lmc.")
    comp.add_argument("-d", "--decompress", action="store_true",
                      help="decompress instead (same as the decompress command)")
    comp.add_argument("--model", metavar="SPEC", default=codec.DEFAULT_SPEC,
                      help="predictor to compress with (default: %(default)s; see below); "
                           "ignored with -d, since a .lmc file names its own model")

    dec = commands.add_parser(
        "decompress", parents=[io], help="decompress FILE.lmc to FILE",
        description="Decompress each FILE.lmc to FILE, verifying length and CRC-32. "
                    "A name not ending in .lmc is refused unless -c or -o is given.")
    dec.set_defaults(decompress=True, model=None)

    info = commands.add_parser("info", help="print the header of .lmc files",
                               description="Print the header fields of each .lmc FILE.")
    info.add_argument("files", nargs="+", metavar="FILE", help='.lmc file(s); "-" reads standard input')
    info.add_argument("--model-dir", metavar="DIR", action="append", dest="model_dirs", type=_model_dir,
                      help="folder searched first for a file's model (repeatable); info says where it is found")

    rep = commands.add_parser(
        "reproduce", help="reproduce the paper's Table 1 on the data available",
        description="Evaluate classical compressors and lmc_ref's predictors on 2048-byte chunks of "
                    "text (enwik8, or the prefix found), image patches, audio and random bytes, "
                    "decoding and comparing every chunk, and write table1.json, table1.md and "
                    "table1.png.  Data: --text FILE, else LMC_REF_DATA or the user cache; "
                    "--images/--audio DIR, else LMC_REF_DATA/images and /audio when present.")
    rep.add_argument("--quick", action="store_true",
                     help="at most 1 MiB of text and 512 chunks per other modality (minutes on a laptop)")
    rep.add_argument("--text", metavar="FILE", help="enwik8/enwik9 file (or a prefix of one)")
    rep.add_argument("--images", metavar="DIR", help="folder of images (ImageNet layout or flat)")
    rep.add_argument("--audio", metavar="DIR", help="folder of FLAC/WAV files at 16 kHz")
    rep.add_argument("--out", metavar="DIR", default="results", help="output folder (default: %(default)s)")
    rep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    rep.add_argument("--no-verify", dest="verify", action="store_false",
                     help="skip decoding and comparing (faster; figures are then unverified)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the random-bytes modality")
    rep.add_argument("--transformer", metavar="CKPT", action="append", dest="transformers",
                     help="add a row for this trained checkpoint (repeatable; default: the .npz files in "
                          "~/.cache/lmc_ref/checkpoints, if any); text rows use only held-out chunks. "
                          "About 10 KB/s per direction for the 200K model on 2 cores")
    rep.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                     help="numeric backend of the transformer rows (cuda: on a GPU)")
    rep.add_argument("--download", action="store_true",
                     help="if no enwik8 is found, download it (36 MB zip, checked) into the user cache")
    rep.set_defaults(name="table1", module_options=TABLE1_OPTIONS)

    _add_models_parser(commands, raw)

    trn = commands.add_parser("train", help="train the paper's byte transformer", description=_train.DESCRIPTION)
    _train.add_arguments(trn)

    names = [name for name in EXPERIMENTS if name != "table1"]  # table1 is the reproduce command
    exp = commands.add_parser(
        "experiment", help=f"run one of the paper's experiments ({', '.join(names)})",
        description="Run an experiment and write results/NAME.json plus its figures.  "
                    + "  ".join(f"{name}: {EXPERIMENTS[name].description}" for name in names))
    exp.add_argument("name", choices=names, help="which experiment")
    exp.add_argument("--quick", action="store_true",
                     help="context: 256 KiB of text instead of 8 MiB; scaling, tokenization: small "
                          "settings that fit in about 10 minutes; generate: (always small)")
    exp.add_argument("--seed", type=int, default=0,
                     help="generate: sampling seed; scaling, tokenization: training seed (default: %(default)s)")
    exp.add_argument("--text", metavar="FILE", help="enwik8 file (or a prefix of one)")
    exp.add_argument("--out", metavar="DIR", default="results", help="output folder (default: %(default)s)")
    exp.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    exp.set_defaults(module_options=())
    for sub in (rep, exp):
        sub.add_argument("--progress", action=argparse.BooleanOptionalAction, default="auto",
                         help="progress bars on stderr (default: when stderr is a terminal)")

    return parser


#: Options every experiment takes (``lmc_ref.experiments``), read from the parsed arguments.
EXPERIMENT_OPTIONS = ("text", "quick", "workers", "seed", "progress")
#: Options of ``reproduce`` that only Table 1 takes.
TABLE1_OPTIONS = ("images", "audio", "verify", "download", "transformers", "backend")


def _experiment(args):
    """``reproduce`` and ``experiment NAME``: run ``args.name`` from the table ``EXPERIMENTS``.

    Every experiment is called alike, with the options all of them take plus
    those of its own command (``args.module_options``); ``reproduce`` then
    prints the Table 1 it wrote.
    """
    options = {key: getattr(args, key) for key in EXPERIMENT_OPTIONS + args.module_options}
    run_experiment(args.name, args.out, log=lambda line: print(line, file=sys.stderr), **options)
    if args.command == "reproduce":
        print((Path(args.out) / "table1.md").read_text(), end="")
    return 0


def _display(name):
    return "(stdin)" if name == STDIN else name


def _report(name, exc):
    """Print ``lmc-ref: FILE: message`` on one line of stderr."""
    if isinstance(exc, OSError):
        message = exc.strerror or str(exc)
        if exc.filename is not None and exc.filename != name:
            message = f"{exc.filename}: {message}"
    elif isinstance(exc, MemoryError):
        message = "out of memory"
    else:
        message = str(exc)
    message = " ".join(message.split()) or type(exc).__name__
    print(f"lmc-ref: {_display(name)}: {message}", file=sys.stderr)


def _read(name):
    if name == STDIN:
        return sys.stdin.buffer.read()
    with open(name, "rb") as f:
        return f.read()


def _output_name(name, decompress, force):
    """Default output path: ``FILE.lmc`` when compressing, ``FILE`` minus ``.lmc`` when decompressing."""
    if decompress:
        if not name.endswith(SUFFIX) or os.path.basename(name) == SUFFIX:
            raise ValueError(f"name does not end in {SUFFIX}; use -o PATH or -c to choose the output")
        return name[: -len(SUFFIX)]
    if name.endswith(SUFFIX) and not force:
        raise ValueError(f"already has the {SUFFIX} suffix; use -f to compress it again")
    return name + SUFFIX


def _write_atomic(path, data, force, mode_from=None):
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The temporary file is renamed over ``path`` only once fully written and is
    removed on any failure (including KeyboardInterrupt), so ``path`` is either
    untouched or complete.  Its permission bits are copied from ``mode_from``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.",
                                         suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        if mode_from is not None:
            mode = stat.S_IMODE(os.stat(mode_from).st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp_name, mode)
        if os.path.lexists(path) and not force:  # re-check: it may have appeared meanwhile
            raise FileExistsError(0, f"{path} already exists; use -f to overwrite")
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


MODEL_DIR_HELP = ("folder to look in for the model a file names by hash (repeatable; searched before "
                  "LMC_REF_MODELS and the user model store: see lmc-ref models --help); when compressing, "
                  "where transformer:model=HASH is looked up first")

MODELS_DESCRIPTION = """\
A .lmc file names its trained model by the SHA-256 of the weights (recorded in
its header), never by a path, so it decodes wherever that model can be found.
Decompression looks for it by hash in, in order:

  1. each --model-dir DIR given, in order;
  2. each folder of the LMC_REF_MODELS path list (folders separated by "{sep}");
  3. the user model store, $XDG_CACHE_HOME/lmc_ref/models (by default
     ~/.cache/lmc_ref/models; here: {store}).

In each folder the file named by the hash (HASH.npz) is tried first, then any
other model file there; every candidate is verified by hashing its weights, and
only regular files are opened. "lmc-ref train --out CKPT" puts a copy of the
checkpoint in the store; "lmc-ref models add CKPT" does so for any checkpoint.
Compression can pick a stored model by hash: --model transformer:model=HASH
(a unique prefix of 8+ hex digits will do)."""


def _model_dir(value):
    """argparse type of --model-dir: an existing folder."""
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value} is not a folder")
    return value


def _add_models_parser(commands, raw):
    """The ``models`` command: ``models add FILE...`` and ``models list``."""
    text = MODELS_DESCRIPTION.format(sep=os.pathsep, store=models.store_dir())
    mod = commands.add_parser("models", formatter_class=raw, description=text,
                              help="the model store: add trained models, list them")
    actions = mod.add_subparsers(dest="models_command", metavar="ACTION", title="actions")
    add = actions.add_parser(
        "add", formatter_class=raw, help="copy model files into the store, named by their hash",
        description="Copy each model FILE (a checkpoint of `lmc-ref train`) into the user model store\n"
                    f"({models.store_dir()}) as HASH.npz, after checking it, so that files\n"
                    "compressed with it decode from anywhere.")
    add.add_argument("files", nargs="+", metavar="FILE", help="model file(s), e.g. a checkpoint .npz")
    lst = actions.add_parser(
        "list", formatter_class=raw, help="list the models found (hash, kind, parameters, size)",
        description="List every model in the places decompression searches (--model-dir folders,\n"
                    "LMC_REF_MODELS, the user model store), in search order: hash, kind,\n"
                    "parameters, file size and path.")
    lst.add_argument("--model-dir", metavar="DIR", action="append", dest="model_dirs", type=_model_dir,
                     help="also list this folder, first (repeatable)")
    mod.set_defaults(models_parser=mod)


def _size(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _models(args):
    """``lmc-ref models add|list``; returns the exit status."""
    if args.models_command is None:
        args.models_parser.print_help(sys.stderr)
        return 2
    status = 0
    if args.models_command == "add":
        for name in args.files:
            try:
                entry, added = models.add(name)
            except (ValueError, OSError, MemoryError) as exc:
                if str(exc).startswith(f"{name}: "):  # the file is named once, by _report
                    exc = ValueError(str(exc)[len(name) + 2:])
                _report(name, exc)
                status = 1
                continue
            what = f"{entry.hash.hex()} ({entry.kind}, {entry.parameters:,} parameters)"
            print(f"added {what} as {entry.path}" if added else f"already in the store: {what} at {entry.path}")
        return status
    found, problems = models.entries(args.model_dirs)
    for path, reason in problems:
        print(f"lmc-ref: warning: skipped {path}: {reason}", file=sys.stderr)
    if not found:
        where = "; ".join(f"{label} {folder}" for label, folder in models.search_places(args.model_dirs))
        print(f"no models found (searched {where}); add one with `lmc-ref models add FILE`")
        return 0
    print(f"{'HASH':<64}  {'KIND':<11}  {'PARAMETERS':>10}  {'SIZE':>9}  FILE")
    for e in found:
        print(f"{e.hash.hex():<64}  {e.kind:<11}  {e.parameters:>10,}  {_size(e.size):>9}  {e.path}")
    return status


def _store_hint(name, blob, args):
    """After compressing with a model the store does not hold: one note on stderr saying how to keep it."""
    header = container.unpack(blob)[0]
    seen = getattr(args, "hinted", set())
    if not header.model_hash or header.model_hash in seen or models.findable(header.model_hash,
                                                                             model_dirs=args.model_dirs):
        return
    seen.add(header.model_hash)
    args.hinted = seen
    source = next(iter(models.remembered(header.model_hash)), "CKPT")
    print(f"lmc-ref: note: {_display(name)}: the model (hash {header.model_hash.hex()[:16]}...) is not in the "
          f"model store; to decode the file after {source} moves, or elsewhere, run "
          f"`lmc-ref models add {source}` (or decompress with --model-dir DIR)", file=sys.stderr)


def _model_file_line(header, model_dirs):
    """The ``info`` line saying where the file's model is found (empty for adaptive models)."""
    if not header.model_hash:
        return ""
    try:
        kind = getattr(predictor_class(parse_spec(header.spec)[0]), "model_kind", None)
        if kind is None:
            return ""
        where = str(models.find(header.model_hash, [kind], model_dirs).entry.path)
    except models.ModelNotFound:
        where = "not found (add it with `lmc-ref models add FILE`, or give --model-dir DIR)"
    except ValueError:
        return ""
    return f"\n{'model file:':<18}{where}"


def _code_one(name, args):
    """Compress or decompress one input as ``args`` say; raise ValueError/OSError on failure."""
    from_stdin = name == STDIN
    to_stdout = args.stdout or (from_stdin and args.output is None)
    out_path = None
    if not to_stdout:
        out_path = args.output or _output_name(name, args.decompress, args.force)
        if os.path.lexists(out_path):
            if not from_stdin and os.path.exists(name) and os.path.samefile(name, out_path):
                raise ValueError(f"output {out_path} is the input file itself")
            if not args.force:
                raise ValueError(f"output {out_path} already exists; use -f to overwrite")
    elif not args.decompress and not args.force and sys.stdout.isatty():
        raise ValueError("refusing to write compressed data to a terminal; use -f to force")

    data = _read(name)
    progress = "auto" if args.progress is None else args.progress
    if args.decompress:
        result = codec.decompress(data, path=args.path, progress=progress, backend=args.backend,
                                  model_dirs=args.model_dirs)
    else:
        result = codec.compress(data, spec=args.model, path=args.path, progress=progress,
                                      backend=args.backend or "cpu", model_dirs=args.model_dirs)
        _store_hint(name, result, args)

    if to_stdout:
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
        return
    _write_atomic(out_path, result, args.force, mode_from=None if from_stdin else name)
    if not (args.keep or from_stdin):
        os.unlink(name)


def _describe(name, header, payload, file_size):
    """The ``info`` text of one container."""
    if header.length:
        rate = (f"{100 * file_size / header.length:.2f} % ({8 * file_size / header.length:.3f} bits/byte,"
                f" whole file incl. {file_size - len(payload)}-byte header)")
    else:
        rate = "n/a (empty original)"
    fields = [
        ("file", _display(name)),
        ("format version", header.version),
        ("predictor spec", header.spec),
        ("model hash", header.model_hash.hex() or "(none: adaptive model)"),
        ("backend", header.backend),
        ("original length", f"{header.length} bytes"),
        ("CRC-32", f"0x{header.crc32:08x}"),
        ("payload length", f"{len(payload)} bytes"),
        ("compression rate", rate),
    ]
    return "\n".join(f"{key + ':':<18}{value}" for key, value in fields)


def _run(args):
    """Run the parsed command over every FILE; return 0, or 1 if any file failed."""
    status = 0
    for i, name in enumerate(args.files):
        try:
            if args.command == "info":
                blob = _read(name)
                text = _describe(name, *container.unpack(blob), len(blob))
                text += _model_file_line(container.unpack(blob)[0], args.model_dirs)
                print(("\n" if i else "") + text)
            else:
                _code_one(name, args)
        except (ValueError, OSError, MemoryError) as exc:
            _report(name, exc)
            status = 1
    return status


def main(argv=None):
    """Entry point of ``lmc-ref``; returns the exit status.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 if any file failed, 2 for a usage error, 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "compress")  # gzip style: "lmc-ref FILE", "lmc-ref -d FILE.lmc"
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "models":
            return _models(args)
        if args.command in ("reproduce", "experiment", "train"):
            try:
                return _experiment(args) if args.command != "train" else _train.run(args)
            except (ValueError, OSError) as exc:
                _report(args.command, exc)
                return 1
        if args.command != "info":
            if args.output is not None and len(args.files) > 1:
                parser.error("-o/--output needs exactly one FILE")
            if args.output is not None and args.stdout:
                parser.error("-o/--output and -c/--stdout exclude each other")
        return _run(args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print("lmc-ref: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
