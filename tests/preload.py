"""A `dlopt` that has imported its libraries once: the tests' fork server (conftest.py, `Cli.run`).

Each `dlopt` start spends seconds importing torch, Lightning and the rest before it reads its first override;
hundreds of end-to-end tests paid that again and again. This process imports them once, then reads one request
per line on stdin (JSON: argv, cwd, env, stdout, stderr) and forks a child per request. The child is the command:
it takes the request's folder, environment and output files, calls `dlopt.cli.main` as the console script does,
runs the exit handlers and exits with main's status. The server answers `{"pid": ...}` at the fork and
`{"status": ...}` when the child has ended, and never computes with torch itself, so every child starts from
the same untouched state. Each request is one child at a time: one server per test worker.

Run as a script (`python tests/preload.py DLOPT_EXE`), so that Lightning's DDP launcher, which starts ranks >= 1
by running `sys.argv[0]` again, starts the real `dlopt` command. What a fork cannot give, a fresh process does:
conftest.py starts one for a request that changes the environment torch read at import (OMP_NUM_THREADS) or
that checks what dlopt imports.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import pkgutil
import sys
import threading
import traceback


def preload() -> None:
    """Every dlopt module, and with them torch, Lightning, Hydra, torchvision, Optuna, Captum."""
    import dlopt

    for module in pkgutil.walk_packages(dlopt.__path__, "dlopt."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def exit_status(code) -> int:
    """What Python's own exit makes of `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def interpreter_exit() -> None:
    """What Python's own exit runs before the process ends, for a child that ends with os._exit (which runs none of
    it): join the threads the command left running and shut thread-pool executors down, then the exit handlers
    (logging.shutdown, TensorBoard's writers), in Py_FinalizeEx's order. Both calls are private to CPython.

    Checked on CPython 3.10.13, 3.11.7, 3.12.1 and 3.13.0: both exist and take no argument, and in a forked child
    they join a running non-daemon thread and then run an atexit handler. On a Python without them the child prints
    the AttributeError to the command's stderr (a traceback the tests refuse), never silently."""
    threading._shutdown()
    atexit._run_exitfuncs()


def command(request: dict) -> None:
    """The forked child: become `dlopt ARGS` in the request's folder, with its environment and output files.
    It never returns: whatever fails, even before main, ends this process, not in the server's loop."""
    status = 1
    try:
        os.setpgid(0, 0)  # its own process group: a timeout kills it with whatever it started
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                               (2, request["stderr"], os.O_WRONLY)):
            os.dup2(os.open(path, mode), fd)
        sys.argv = list(request["argv"])
        from dlopt.cli import main

        status = exit_status(main(sys.argv[1:]))
    except SystemExit as stop:
        status = exit_status(stop.code)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            try:
                interpreter_exit()
            except BaseException:  # said in the command's stderr, e.g. by a Python without these private calls
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def serve(exe: str) -> None:
    sys.path[0] = os.path.dirname(exe)  # as for the console script: its own folder first, not tests/
    answer = os.fdopen(os.dup(1), "w", buffering=1)  # the answers' own channel: what anything prints goes to
    os.dup2(2, 1)  # stderr (the client's log), never among the answers
    preload()
    assert threading.active_count() == 1, "a thread started at import: forking would copy its locks, not the thread"
    print(json.dumps({"ready": os.getpid()}), file=answer)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            command(request)
        print(json.dumps({"pid": pid}), file=answer)
        _, wait = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(wait)}), file=answer)


if __name__ == "__main__":
    serve(sys.argv[1])
