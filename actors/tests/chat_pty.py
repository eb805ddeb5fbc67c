"""Drives `edgeray chat` through a pseudo-terminal, like a person at a keyboard.

usage: chat_pty.py echo|model EDGERAY_ARGS...

echo:  against a gateway with the echo backend (one word per token, slowed down): an answer
       streams, Ctrl-C stops a long answer mid-way (the program goes on), the next question
       carries the history (the context count covers every earlier turn), /exit quits with 0.
model: against a model deployed by chat itself: one answer streams, Ctrl-D quits with 0.
Exit status 0 when every step held; otherwise the failed step and the terminal text so far.
"""

import os
import pty
import re
import select
import sys
import time

mode, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

seen = ""
cursor = 0  # where the next expect() starts by default: after the last match


def fail(why):
    print(f"FAIL: {why}\n--- terminal so far ---\n{seen}", file=sys.stderr)
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    sys.exit(1)


def expect(pattern, timeout, start=None):
    """Waits until `pattern` (a regex) appears after offset `start` (default: after the last
    match); returns its match."""
    global seen, cursor
    start = cursor if start is None else start
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, seen[start:])
        if m:
            cursor = start + m.end()
            return m
        left = deadline - time.time()
        if left <= 0:
            fail(f"no {pattern!r} within {timeout} s")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                fail(f"the program ended before {pattern!r}")
            seen += data.decode("utf-8", "replace")


def send(text):
    os.write(fd, text.encode())


def wait_exit(timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            # Drain what is left, for the log.
            return os.waitstatus_to_exitcode(status)
        try:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                os.read(fd, 65536)
        except OSError:
            time.sleep(0.1)
    fail(f"the program did not exit within {timeout} s")


if mode == "echo":
    expect(r"chatting with edgeray-echo", 30)
    expect(r"> ", 10)
    mark = len(seen)
    send("one two three\r")
    expect(r"one two three", 10, mark)
    m = expect(r"\[3 tokens, [0-9.]+ tokens/s, context (\d+) tokens, stop\]", 10, mark)
    # user message: 1 + 3 words; answer: 3.
    if int(m.group(1)) != 7:
        fail(f"first context {m.group(1)} != 7")
    expect(r"> ", 10, mark)
    long = " ".join(f"w{i}" for i in range(300))
    mark = len(seen)
    send(long + "\r")
    expect(r"w0 w1 w2 w3", 20, len(seen) + len(long))
    send("\x03")  # Ctrl-C
    expect(r"\[stopped\]", 10, mark)
    stopped_at = cursor
    expect(r"> ", 10)
    partial = seen[mark + len(long):stopped_at]
    if "w299" in partial:
        fail("the long answer was not cut short")
    mark = len(seen)
    send("again please\r")
    m = expect(r"\[2 tokens, [0-9.]+ tokens/s, context (\d+) tokens, stop\]", 10, mark)
    # Every earlier turn went with the question: 4 + 3 + 301 + (1 + part) + 3, plus 2 generated.
    if int(m.group(1)) < 4 + 3 + 301 + 1 + 3 + 2:
        fail(f"context {m.group(1)} does not cover the history")
    expect(r"> ", 10, mark)
    send("/exit\r")
    code = wait_exit(10)
elif mode == "model":
    expect(r"chatting with ", 300)
    expect(r"> ", 10)
    mark = len(seen)
    send("What is the capital of France?\r")
    m = expect(r"\[(\d+) tokens, [0-9.]+ tokens/s, context (\d+) tokens", 120, mark)
    answer = seen[mark:].split("What is the capital of France?", 1)[-1]
    answer = answer[: answer.find("[")].strip()
    if int(m.group(1)) < 1 or not answer:
        fail("no answer streamed")
    expect(r"> ", 10, mark)
    send("\x04")  # Ctrl-D
    code = wait_exit(30)
else:
    fail(f"unknown mode {mode}")

if code != 0:
    fail(f"exit status {code}")
print("OK")
