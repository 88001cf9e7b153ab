"""Starting, watching and stopping one worker process. Standard library and psutil.

A worker runs ``python -m benchmark.worker FD`` in a new session (its own process group), in its
own PID, IPC and network namespaces where the machine allows, with PR_SET_PDEATHSIG so it dies
with the judge. A watchdog thread kills the whole group when the
evaluation's wall clock runs out, when its resident memory passes the cap, or when the evaluation
is cancelled. :meth:`WorkerProcess.recv` waits for the next message at most the heartbeat limit:
silence longer than that is a hang and kills the worker. The judge reads the worker's CPU time from
its cgroup where it could make one, else from its process tree; the tree, its resident memory and
its CPU time come from psutil, on any platform (no /proc needed), outside the worker's reach. What a
host cannot enforce (benchmark.host) is labelled in the result's ``sandbox`` and warned once.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import psutil

from .. import host
from ..fsutil import REPO_ROOT
from ..protocol import Message, Op, ProtocolError, WorkerRequest
from ..spec import SPEC
from .cpugroup import CpuGroup

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 6000
POLL_S = 0.1
# Set to stop every evaluation in flight in this process (their workers are killed), e.g. when a
# study is interrupted with Ctrl-C while evaluations run in threads.
CANCEL = threading.Event()


# What a worker imports from outside the standard library: torch (with the packages it requires and
# Triton, its GPU compiler), numpy, tokenizers, tqdm, yaml.
RUNTIME_PACKAGES = ("torch", "functorch", "torchgen", "triton", "numpy", "tokenizers", "tqdm", "yaml",
                    "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "typing_extensions",
                    "fsspec")


def read_paths(trusted: bool = False) -> tuple:
    """Folders a sandboxed worker may read: the Python installation and the benchmark package
    (and the reference program, which the benchmark's own experiment models build on)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(REPO_ROOT / "benchmark"), os.path.dirname(os.path.realpath(sys.executable))}
    if trusted:
        paths.add(str(REPO_ROOT / "initial_program.py"))
    repo = str(REPO_ROOT)
    for entry in sys.path:
        if entry and os.path.isdir(entry) and ("site-packages" in entry or "dist-packages" in entry):
            paths.add(entry)
    for name in RUNTIME_PACKAGES:  # wherever they come from: a PYTHONPATH folder, links resolved
        spec = importlib.util.find_spec(name)
        if spec is not None:
            place = spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin
            paths.update(os.path.dirname(p) for p in (place, os.path.realpath(place)))
    return tuple(sorted(p for p in paths if p and os.path.realpath(p) != repo))


class WorkerGone(Exception):
    """The worker ended, was killed, or broke the protocol; error_type says which."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


NAMESPACES = ("--pid", "--fork", "--kill-child", "--ipc", "--net")


def isolation() -> tuple:
    """(command prefix, description): the worker runs in its own user, PID, IPC and network
    namespaces through util-linux ``unshare`` (without the user namespace where that is refused).
    Its helpers cannot leave its process tree (orphans re-parent to the worker, and all die with
    it), and SysV shared memory, message queues, abstract sockets, loopback traffic and the user's
    keyrings cannot carry anything to another worker.
    Where neither works, workers run without (the result's ``sandbox`` says so)."""
    if host.switched_off("namespaces"):
        return (), f"no namespaces ({host.why_off('namespaces')})"
    return _namespaces()


@functools.lru_cache(maxsize=None)
def _namespaces() -> tuple:
    tool = shutil.which("unshare")
    if tool is None or sys.platform != "linux":
        return (), "no namespaces (util-linux unshare not found)"
    for extra in (("--user", "--map-root-user"), ()):  # a user namespace also separates keyrings
        command = (tool,) + extra + NAMESPACES + ("--",)
        try:
            done = subprocess.run(command + ("true",), capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command, "own user, PID, IPC and network namespaces" if extra else \
                "own PID, IPC and network namespaces (no user namespace: keyrings shared)"
    return (), "no namespaces (unshare is not permitted here)"


MAX_LINE = 1 << 20  # a longer channel line is a protocol breach (a worker flooding the judge)
# Channel lines read ahead of the judge (an honest worker is never more than 3 ahead): a worker
# writing lines faster than the judge takes them waits on its pipe, and the judge holds at most
# MAX_QUEUED x MAX_LINE bytes of them, however long it is busy.
MAX_QUEUED = 16

# What a worker lacks without each host feature (benchmark.host), for the warning.
UNENFORCED = {"landlock": "no file-system or network wall (Landlock)",
              "namespaces": "no PID, IPC or network namespaces of its own",
              "cgroup": "no cgroup (the CPU time of children the kernel reaps itself is not counted)"}
_WARNED: set = set()  # features warned about in this process


def _session(pid: int) -> Optional[int]:
    try:
        return os.getsid(pid)
    except (OSError, AttributeError):  # gone, or a platform without sessions
        return None


def _processes() -> dict:
    """pid -> (psutil.Process, parent pid) for every process the judge can see."""
    found = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            found[proc.pid] = (proc, ppid)
    return found


def _same(pid: int, proc: "psutil.Process") -> bool:
    """`pid` is still the process `proc` was (not a new one given its number)."""
    try:
        return psutil.Process(pid) == proc  # pid and start time
    except psutil.Error:
        return False


def descendants(root: int, known: dict) -> dict:
    """pid -> psutil.Process of `root` and every process descended from it or in its session,
    including ones seen before (in `known`) that have since left the session with setsid or been
    re-parented: a worker's helpers are counted and killed with it."""
    table = _processes()
    tracked = {pid: proc for pid, proc in known.items() if pid in table and _same(pid, proc)}
    if root in table:
        tracked[root] = table[root][0]
    grew = True
    while grew:
        grew = False
        for pid, (proc, ppid) in table.items():
            if pid not in tracked and (ppid in tracked or _session(pid) == root):
                tracked[pid] = proc
                grew = True
    return tracked


def usage(procs: dict) -> tuple:
    """(resident MiB, CPU seconds with reaped children) of the processes in `procs` (pid ->
    psutil.Process, as :func:`descendants` gives)."""
    rss = cpu = 0.0
    for proc in procs.values():
        try:
            with proc.oneshot():
                memory, times = proc.memory_info(), proc.cpu_times()
        except psutil.Error:
            continue
        rss += memory.rss
        cpu += times.user + times.system + times.children_user + times.children_system
    return rss / 2**20, cpu


MAX_FOLDER_ENTRIES = 100_000
FOLDER_POLL_S = 1.0


def folder_usage(path: Path, max_entries: int = MAX_FOLDER_ENTRIES) -> tuple:
    """(MiB allocated, entries) under `path`, walked without recursion; stops counting entries
    past max_entries. A worker's folder lives in /dev/shm where there is one: its files are RAM."""
    blocks = entries = 0
    stack = [str(path)]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    blocks += st.st_blocks
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return blocks * 512 / 2**20, entries


# Where compilers and caches write inside a worker's folder (the only place it may write): torch.compile's
# inductor and Triton caches, the CUDA JIT cache, and every temp file (TMPDIR), never /tmp or ~.
SCRATCH = {"TMPDIR": "tmp", "TORCHINDUCTOR_CACHE_DIR": "cache/inductor", "TRITON_CACHE_DIR": "cache/triton",
           "CUDA_CACHE_PATH": "cache/nv", "XDG_CACHE_HOME": "cache", "HOME": "."}


def worker_env(workdir: Path, threads: Optional[int] = None, extra: Optional[dict] = None) -> dict:
    """The environment of a worker in `workdir`: the judge's, without the data paths, with its
    scratch folders (:data:`SCRATCH`, created here) private to it. Compiled code and caches stay
    in the worker's folder, so they die with it and carry nothing to the next worker."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    for key in ("PLASA_DATA_DIR", "PLASA_TOKENIZER_DIR", "PLASA_CACHE_DIR", "PLASA_OVERRIDES"):
        env.pop(key, None)  # a worker has no business knowing where the data lives
    for key, sub in SCRATCH.items():
        folder = Path(workdir) / sub
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        env[key] = str(folder)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


class _LogReader(threading.Thread):
    """Drains the worker's stdout+stderr (a worker that cannot write would stall): its first `limit`
    bytes are echoed, the rest counted and dropped (a candidate writing gigabytes must not fill the
    judge's log), and a bounded tail is kept for feedback."""

    def __init__(self, stream, echo, limit: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.echo, self.limit = stream, echo, limit
        self.total = self.forwarded = 0  # bytes read, bytes echoed
        self._tail = b""

    @property
    def tail(self) -> str:
        return self._tail.decode("utf-8", errors="replace")[-LOG_TAIL_CHARS:]

    def counts(self) -> dict:
        """Bytes the worker wrote, forwarded to the echo, and dropped past the limit."""
        return {"bytes": self.total, "forwarded_bytes": self.forwarded,
                "dropped_bytes": max(0, self.total - self.limit)}

    def _write(self, text: str) -> None:
        try:
            self.echo.write(text)
            self.echo.flush()
        except (OSError, ValueError):
            pass

    def run(self) -> None:
        for raw in iter(lambda: self.stream.read1(65536), b""):
            room = self.limit - self.total
            self.total += len(raw)
            self._tail = (self._tail + raw)[-4 * LOG_TAIL_CHARS:]  # up to 4 bytes a character
            if self.echo is None or room <= 0:
                continue
            self._write(raw[:room].decode("utf-8", errors="replace"))
            self.forwarded += min(room, len(raw))
            if len(raw) > room:
                self._write(f"\n[plasa] this worker's output passed {self.limit:,} bytes (spec.output_limit_bytes): "
                            "the rest is counted and dropped (the result's worker_output)\n")


class WorkerProcess:
    """One running worker; ``with WorkerProcess(...) as w:`` kills its group on the way out.

    The process starts at once and imports torch; it learns what it is for, and sees candidate
    code, only when :meth:`start` sends its request."""

    def __init__(self, workdir: Path, deadline: float, memory_limit_mb: int,
                 threads: Optional[int] = None, echo=None, isolate: bool = True,
                 extra_env: Optional[dict] = None, output_limit: Optional[int] = None,
                 pass_fds: tuple = ()) -> None:
        self.deadline, self.memory_limit_mb, self.workdir = deadline, memory_limit_mb, workdir
        self.started = False
        self.tracked: dict = {}
        self._cpu = 0.0
        self.messages: "queue.Queue" = queue.Queue(maxsize=MAX_QUEUED)
        self._closing = False
        self.killed: Optional[tuple] = None
        self.peak_rss_mb = 0.0
        read_fd, write_fd = os.pipe()
        env = worker_env(workdir, threads, extra_env)
        prefix, self.isolation = isolation() if isolate else ((), "no namespaces (disabled)")
        # what this host could not give the worker (a missing feature, not one the caller disabled)
        self.unenforced = ["namespaces"] if isolate and not prefix else []
        group = self.group = None if host.switched_off("cgroup") else CpuGroup.create()

        def preexec() -> None:  # in the child, before exec: nothing of the worker has run yet
            _set_pdeathsig()
            if group is not None:
                group.join()

        self.proc = subprocess.Popen(
            list(prefix) + [sys.executable, "-m", "benchmark.worker", str(write_fd)], cwd=str(workdir), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(write_fd, *pass_fds), start_new_session=True, preexec_fn=preexec)
        os.close(write_fd)
        if group is not None and not group.holds(self.proc.pid):
            group.remove(0.0)
            self.group = None
        if self.group is None:
            self.unenforced.append("cgroup")
            why = host.why_off("cgroup") if host.switched_off("cgroup") else "no cgroup could be made"
            self.isolation += (f"; CPU time from its process tree ({why}: a child the kernel reaps "
                               "itself is not counted)")
        else:
            self.isolation += f"; CPU time from its own {self.group.describe}"
        self.logs = _LogReader(self.proc.stdout, echo,
                               SPEC.output_limit_bytes if output_limit is None else output_limit)
        self.logs.start()
        self._channel = os.fdopen(read_fd, "rb")
        reader = threading.Thread(target=self._read_channel, daemon=True)
        self._reader_name = reader.name
        reader.start()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def start(self, request: WorkerRequest) -> None:
        self.started = True
        self.send_line(request.to_json())

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- channel
    def _read_channel(self) -> None:
        while True:
            raw = self._channel.readline(MAX_LINE)
            if not raw:
                break
            if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
                self._queue("\x00flood")
                return
            if not self._queue(raw.decode("utf-8", errors="replace")):
                return
        self._queue(None)  # end of channel: the worker exited (or closed it)

    def _queue(self, item) -> bool:
        """Hands `item` to recv, waiting while MAX_QUEUED lines are unread; False once closed."""
        while not self._closing:
            try:
                self.messages.put(item, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False

    def send_line(self, line: str) -> None:
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker is gone; recv reports why

    def send(self, op: Op) -> None:
        self.send_line(op.to_json())

    def recv(self, heartbeat_s: float) -> Message:
        """The worker's next message, or WorkerGone (exit, kill, hang or a protocol breach)."""
        try:
            line = self.messages.get(timeout=heartbeat_s)
        except queue.Empty:
            self._kill(("hang", f"the worker sent no heartbeat for {heartbeat_s:.0f} s (an infinite "
                                "loop, a deadlock, or a model far slower than the reference)"))
            line = None
        if line == "\x00flood":
            self._kill(("protocol_error", f"the worker wrote a line of over {MAX_LINE} bytes to its channel"))
            raise WorkerGone(*self.killed)
        if line is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # closed its channel but runs on
                self._kill(("protocol_error", "the worker closed its channel and kept running"))
                self.proc.wait(timeout=10)
            self._watchdog.join(timeout=5)
            if self.killed:
                raise WorkerGone(*self.killed)
            raise WorkerGone("worker_died", f"the worker exited with code {self.proc.returncode} "
                                            "(sys.exit, os._exit, a crash or a kill)")
        try:
            return Message.from_json(line)
        except ProtocolError as exc:
            self._kill(("protocol_error", f"the worker wrote something that is not a message: {exc}"))
            raise WorkerGone(*self.killed) from exc

    # ---------------------------------------------------------------- limits
    def _watch(self) -> None:
        folder_mb, next_folder = 0.0, 0.0
        while self.proc.poll() is None:
            self.tracked = descendants(self.proc.pid, self.tracked)
            rss, self._cpu = usage(self.tracked)
            if time.monotonic() >= next_folder:  # files in a RAM-backed folder are memory too
                folder_mb, entries = folder_usage(self.workdir)
                next_folder = time.monotonic() + FOLDER_POLL_S
                if entries > MAX_FOLDER_ENTRIES:
                    self._kill(("memory_limit", f"the worker created over {MAX_FOLDER_ENTRIES} files "
                                                "and folders in its private folder"))
            rss += folder_mb
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            if CANCEL.is_set():
                self._kill(("cancelled", "the evaluation was cancelled"))
            elif time.monotonic() > self.deadline:
                self._kill(("timeout", "the evaluation exceeded its wall-clock limit (an infinite loop, "
                                       "or a model far slower than the reference)"))
            elif rss > self.memory_limit_mb:
                self._kill(("memory_limit", f"the worker used {rss:.0f} MiB (resident memory and the "
                                            f"files in its folder), over the {self.memory_limit_mb} MiB "
                                            "memory limit"))
            time.sleep(POLL_S)

    def sandbox(self, wall: str) -> str:
        """The result's ``sandbox`` field: the worker's wall (its hello) and its isolation. What
        this host could not enforce is warned about once per judge process."""
        missing = ((["landlock"] if wall.startswith("none") and "disabled by the judge" not in wall else [])
                   + self.unenforced)
        new = [name for name in missing if name not in _WARNED]
        if new:
            _WARNED.update(new)
            log.warning("this host cannot enforce every wall around a candidate: %s. Evaluations run and "
                        "score all the same (each result's 'sandbox' field says what was missing); "
                        "evaluate untrusted code on Linux 5.13+ with util-linux unshare and a writable "
                        "cgroup", "; ".join(UNENFORCED[name] for name in new))
        return f"{wall}; {self.isolation}"

    def cpu_s(self) -> float:
        """CPU seconds of the worker and its helpers, outside its reach: from its cgroup (every
        process it ever started) where it has one, else from its process tree."""
        if self.group is not None:
            try:
                return self.group.cpu_s()
            except (OSError, ValueError):
                pass
        return usage(descendants(self.proc.pid, self.tracked))[1]

    def _kill(self, reason: tuple) -> None:
        if self.killed is None:
            self.killed = reason
        self._kill_all()

    def _kill_all(self) -> None:
        """The worker's process group and every helper it started, even one that left it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in descendants(self.proc.pid, self.tracked):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def close(self) -> None:
        self._closing = True  # a channel reader waiting on a full queue stops
        if self.proc.poll() is None:
            if self.started:
                self.send_line(Op("exit").to_json())
            else:
                self.proc.stdin.close()  # an unused worker exits when its request never comes
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._kill_all()  # the worker's children too
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.logs.join(timeout=5)
        self._watchdog.join(timeout=5)
        if self.group is not None:
            self.group.remove()
        streams = [self.proc.stdin]
        if not any(t.is_alive() for t in threading.enumerate() if t.name == self._reader_name):
            streams.append(self._channel)  # never close a stream a blocked reader holds (it would wait)
        for stream in streams:
            try:
                stream.close()
            except (OSError, ValueError):
                pass
