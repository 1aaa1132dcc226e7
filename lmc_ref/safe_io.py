"""File handling a compressor can be trusted with: nothing lost, nothing half-written, nothing clobbered.

Every rule here answers a way a compressor can lose data:

* **Short writes are errors.**  ``write_all`` writes in a loop and checks every
  count; a write that stops early (a full disk, a file-size limit, a closed
  pipe) raises ``OSError`` instead of being taken for success.
* **Outputs appear complete or not at all.**  ``write_new_file`` writes to a
  hidden temporary file next to the destination, syncs it, gives it the
  input's permission bits and modification time, and only then links it into
  place.  Without ``force`` the final step is ``os.link``, which fails if the
  name exists, so two writers racing for one name never overwrite each other:
  one wins, the other reports "already exists" and keeps its input.  Where a
  file system has no hard links the step falls back to a re-check and
  ``os.replace`` (racy, as gzip is everywhere).  The temporary file is removed
  on every failure, Ctrl-C, SIGTERM and SIGHUP (``signals_interrupt``).
* **Only regular files are inputs.**  ``open_input`` refuses a device, FIFO,
  socket or directory (gzip's rule) unless forced, without blocking on a
  FIFO; ``Input.regular`` says whether it is one, and only a regular input
  is ever deleted (``cli_files``), so a device node or FIFO never is, forced or not.
* **Headers are read, not files.**  ``read_prefix`` reads at most a given
  number of bytes, so describing a multi-GB file reads a kilobyte.
"""

import errno
import io
import os
import signal
import stat
import sys
import tempfile
from contextlib import contextmanager

STDIO = "-"
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; raised like KeyboardInterrupt so that ``finally`` blocks clean up."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals_interrupt():
    """While inside, SIGTERM and SIGHUP raise ``Terminated`` (restored on exit).

    Python's default for them is to die at once, skipping the clean-up of a
    half-written temporary file; raising instead runs it, as for Ctrl-C.
    Only the main thread may set handlers; elsewhere this does nothing.  A
    process forked inside (a worker pool) inherits the handler but not the
    clean-up, so there the signal takes its default action again: a pool
    stopping its workers with SIGTERM ends them quietly.
    """
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker: die as it would have without us
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    names = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {}
    try:
        for signum in names:
            saved[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, old in saved.items():
            signal.signal(signum, old)


def write_all(fd, data, what):
    """Write all of ``data`` to file descriptor ``fd``, checking every count; OSError if it cannot."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view[: 1 << 30])
        if n <= 0:
            raise OSError(errno.EIO, f"short write to {what}")
        view = view[n:]


def write_stdout(data):
    """Write ``data`` to standard output completely, or raise OSError (a short write is an error).

    Whatever ``sys.stdout`` holds in its buffer goes first.  A ``sys.stdout``
    without a file descriptor (replaced by a test or an embedding program) is
    written through its own ``write``, every count checked as well.
    """
    stream = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        fd = None
    if fd is None:
        view = memoryview(data).cast("B")
        while view:
            n = stream.write(view)
            if n is None or n <= 0:
                raise OSError(errno.EIO, "short write to standard output")
            view = view[n:]
        stream.flush()
        return
    stream.flush()
    write_all(fd, data, "standard output")


def read_stdin(limit=None):
    """Standard input's bytes (at most ``limit`` of them, if given)."""
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    return stream.read() if limit is None else stream.read(limit)


def stdin_is_terminal():
    """True when standard input is a terminal (or cannot tell), so it is no data source by default."""
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return True


def _kind(mode):
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


class Input:
    """An open input file: its bytes (``read``), its ``stat`` result, and whether it may be deleted."""

    def __init__(self, name, fd, st):
        self.name, self.fd, self.stat = name, fd, st

    @property
    def regular(self):
        return stat.S_ISREG(self.stat.st_mode)

    def read(self, limit=None):
        """All bytes (or at most ``limit``), read through the descriptor opened and checked earlier."""
        with os.fdopen(os.dup(self.fd), "rb", closefd=True) as f:
            return f.read() if limit is None else f.read(limit)

    def close(self):
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_input(name, force=False, what="input"):
    """Open ``name`` for reading, refusing anything but a regular file unless ``force``.

    The file is opened without blocking (a FIFO with no writer would hang
    ``open``) and checked with ``fstat`` on the descriptor, so the check and the
    read see the same file.  A FIFO given with ``force`` is opened blocking,
    so that it is read from its writer's start to its end, as ``cat`` reads it.
    A directory is refused even with ``force``.

    Raises:
        OSError: it cannot be opened.
        ValueError: it is not a regular file (one line, naming what it is).
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not (force and stat.S_ISFIFO(os.stat(name).st_mode)):
        flags |= getattr(os, "O_NONBLOCK", 0)  # a forced FIFO is opened blocking: it waits for its writer
    fd = os.open(name, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError("is a directory, not a file -- ignored")
        if not stat.S_ISREG(st.st_mode) and not force:
            raise ValueError(f"is {_kind(st.st_mode)}, not a regular file -- ignored (-f reads it, "
                             f"and never deletes it)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a forced FIFO is then read to its end
    except BaseException:
        os.close(fd)
        raise
    return Input(name, fd, st)


def read_prefix(name, limit):
    """At most ``limit`` bytes from the start of regular file ``name``, and the file's size."""
    with open_input(name, force=False) as f:
        return f.read(limit), f.stat.st_size


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_new_file(path, data, force, like=None):
    """Write ``data`` (bytes, or an iterable of bytes written as it yields them) to ``path`` completely,
    or leave ``path`` as it was.

    Without ``force`` an existing ``path`` is never replaced, even one that
    appears while ``data`` is being written (``FileExistsError``).  ``like``:
    a ``stat`` result whose permission bits and access/modification times the
    new file takes (the input's, as gzip keeps them); otherwise the umask's
    default mode and the current time.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false.
        OSError: naming ``path``, for any failure to write it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.",
                                         suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            for piece in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                write_all(tmp.fileno(), piece, path)
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, stat.S_IMODE(like.st_mode) if like is not None else _default_mode())
        if like is not None:
            os.utime(tmp_name, ns=(like.st_atime_ns, like.st_mtime_ns))
        _publish(tmp_name, path, force)
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


def _publish(tmp_name, path, force):
    """Give the complete temporary file its final name; never over an existing one unless ``force``."""
    if force:
        os.replace(tmp_name, path)
        return
    try:
        os.link(tmp_name, path)  # atomic: fails if path exists, however late it appeared
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path} already exists; use -f to overwrite") from None
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        # No hard links here (some FUSE, SMB, FAT file systems): re-check, then rename (a small race).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, f"{path} already exists; use -f to overwrite") from None
        os.replace(tmp_name, path)
        return
    os.unlink(tmp_name)


def stdout_is_terminal():
    try:
        return sys.stdout.isatty()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
