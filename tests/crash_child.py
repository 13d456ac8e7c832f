"""A pre-loaded ``fml-taichi train`` server for the crash tests: forks one training process per request.

Importing torch and Taichi costs ~2 s of the ~5 s a tiny training run takes; this process imports
them once (without starting Taichi or torch's thread pool) and forks a child per run, so a kill test
costs half as much. Protocol, one JSON object per line: stdin ``{"argv": [...], "env": {...}, "log":
PATH}``; stdout ``{"pid": N}`` when the child starts, then ``{"code": C}`` (its exit code, -9 when
killed) when it ends.

``env["FML_KILL_AT_WRITE"]`` makes the child send itself SIGKILL inside an atomic write: ``NAME:K``
(the K-th write of the run-folder file NAME in that process). ``FML_KILL_HOW=half`` cuts the temp
file to half its size first (a kill while the bytes go out), ``full`` leaves it complete but not yet
renamed. Without it the child runs normally (the test may kill it from outside at any moment).
"""
import json
import os
import signal
import sys


def _arm(target: str, how: str) -> None:
    """Patch os.replace (what io.atomic renames temp files with) to die inside the chosen write."""
    name_wanted, _, nth = target.rpartition(":")
    nth = int(nth)
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *a, **kw):
        if os.path.basename(os.fspath(src)).startswith(".tmp-") and os.path.basename(os.fspath(dst)) == name_wanted:
            seen[0] += 1
            if seen[0] == nth:
                if how == "half":
                    with open(src, "r+b") as f:
                        f.truncate(os.path.getsize(src) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **kw)

    os.replace = replace


def _child(request: dict) -> int:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    env = request.get("env", {})
    os.environ.update(env)
    if env.get("FML_KILL_AT_WRITE"):
        _arm(env["FML_KILL_AT_WRITE"], env.get("FML_KILL_HOW", "half"))
    from fml_taichi.apps.cli import main

    return main(["train", *request["argv"]])


def serve() -> None:
    import fml_taichi.apps.cli  # noqa: F401 - what every child needs, imported once
    import fml_taichi.apps.train_cmd  # noqa: F401
    import fml_taichi.train.trainer  # noqa: F401

    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            except BaseException:  # noqa: BLE001 - a bug: into the child's log, then a failing exit code
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
