"""A configurable child process for the launcher tests (never runs longer than --lifetime)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pidfile", help="write {pid, pgid, grandchild} here once set up")
    parser.add_argument("--grandchild", action="store_true", help="spawn a sleeping grandchild")
    parser.add_argument("--grandchild-ignores-term", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--group-kill-on-term", action="store_true", help="on SIGTERM, TERM own group")
    parser.add_argument("--parent-watch", action="store_true", help="after the pidfile, exit when orphaned")
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--code", type=int, default=0)
    parser.add_argument("--lines", type=int, default=0, help="print this many numbered lines")
    parser.add_argument("--echo-fd", type=int, default=None, help="accept one connection on this fd, echo")
    parser.add_argument("--lifetime", type=float, default=30.0)
    args = parser.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.group_kill_on_term:
        from gymfleet.launcher.lifeline import kill_own_process_group

        def on_term(signum: int, frame: object) -> None:
            kill_own_process_group()
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
    grandchild = None
    if args.grandchild:
        extra = ["--ignore-term"] if args.grandchild_ignores_term else []
        grandchild = subprocess.Popen(
            [sys.executable, __file__, "--lifetime", str(args.lifetime), *extra],
            stdin=subprocess.DEVNULL,
        )
    for number in range(args.lines):
        print(f"line {number}", flush=True)
    if args.pidfile:
        info = {"pid": os.getpid(), "pgid": os.getpgrp(), "grandchild": grandchild and grandchild.pid}
        tmp = args.pidfile + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(info, handle)
        os.replace(tmp, args.pidfile)
    if args.parent_watch:
        from gymfleet.launcher.lifeline import install_parent_watch

        def on_orphan() -> None:
            if args.pidfile:
                with open(args.pidfile + ".orphaned", "w") as handle:
                    handle.write(str(os.getppid()))
            os.kill(os.getpid(), signal.SIGTERM)

        install_parent_watch(on_orphan=on_orphan)
    if args.echo_fd is not None:
        listener = socket.socket(fileno=args.echo_fd)
        listener.settimeout(args.lifetime)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(args.lifetime)
            data = conn.recv(1024)
            conn.sendall(data + b" " + str(os.getpid()).encode())
        return
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        print(f"exiting with {args.code}", flush=True)
        sys.exit(args.code)
    time.sleep(args.lifetime)


if __name__ == "__main__":
    main()
