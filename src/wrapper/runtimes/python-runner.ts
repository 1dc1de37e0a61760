/**
 * The Python runner, passed to `python3 -c`: imports <module path> and calls <function>(task, ctx)
 * with ctx.emit(event) and ctx.log(message). Runs in the untrusted process.
 */
export const PYTHON_RUNNER = `
import importlib.util, json, sys, traceback

def write(msg):
    sys.stdout.write(json.dumps(msg) + "\\n")
    sys.stdout.flush()

class Ctx:
    def emit(self, event):
        write({"type": "event", "event": event})
    def log(self, message, level="info"):
        write({"type": "log", "level": level, "message": str(message)})

def main():
    path, name = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "handler")
    message = json.loads(sys.stdin.readline() or "{}")
    if message.get("type") != "task":
        raise RuntimeError("expected a task message on stdin")
    spec = importlib.util.spec_from_file_location("trace_user_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, name, None)
    if not callable(handler):
        raise RuntimeError(f"{path} has no function {name!r}")
    handler(message["task"], Ctx())
    write({"type": "done"})

try:
    main()
except Exception as e:
    write({"type": "error", "message": f"{type(e).__name__}: {e}"})
    sys.exit(1)
`;
