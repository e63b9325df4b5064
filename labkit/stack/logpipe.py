"""Run a service with secrets scrubbed from its output: ``python -m labkit.stack.logpipe -- CMD...``.

Some services print their configuration at start (versitygw prints its webhook
URL, which carries the hook's secret). This wrapper starts ``CMD`` as its child,
in the same process group, and copies its output to our stdout (the service's
log) with every value listed in ``LABKIT_REDACT`` (one per line) replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

MASK = b"***"


def scrub(line: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        line = line.replace(secret, MASK)
    return line


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: python -m labkit.stack.logpipe -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    secrets = [s.encode() for s in os.environ.pop("LABKIT_REDACT", "").splitlines() if s]
    # The group gets SIGTERM on stop; keep copying until the service itself has exited.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    out = sys.stdout.buffer
    for line in child.stdout:
        out.write(scrub(line, secrets))
        out.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
