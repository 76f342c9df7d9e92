#!/usr/bin/env python3
"""The load and the checks of bench/soak.sh (see bench/README.md, "Soak").

Started by soak.sh with a running ssehub (pinned to CPU 0); this process runs
pinned to CPU 1 and, for --seconds:

- runs `ssehub-bench fanout` for the steady part: publishers at a fixed rate
  over --channels channels named soak-0, soak-1, ..., and --bench-subscribers
  subscribers that stay connected and are checked by the bench itself (every
  accepted message once, in order);
- churners: --churners subscribers (Python asyncio) that connect, read for a
  while, disconnect (RST or FIN), and reconnect with Last-Event-ID (sometimes
  ?lastEventId=) in a loop; now and then one stays away longer than the
  history reaches, so it must get a gap frame. Every message frame's seq must
  follow the previous one by exactly 1 unless a gap frame announced the hole;
- stalled readers: every --stall-every seconds, --stall-batch connections
  with a tiny receive buffer ask for the whole history and never read; the
  server's side of each is watched in /proc/net/tcp and /proc/PID/fd: it must
  be ended after --write-timeout (not before, and not much later) and its fd
  freed; then the reader drains its socket and must find the stream ended;
- resume checks: every --resume-every seconds a reconnection with an old id
  (inside the history, older than it, the newest one, another epoch, a seq
  never issued, an unparsable id) whose replay and gap frame are checked;
- samples the server's RSS, open file descriptors and open streams.

At the end every churner catches up to the newest message of its channel, and
the total of the channels' last ids must equal the number of 201 answers the
bench got. Prints a table and a verdict; exit status 0 (pass) or 1 (fail).
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import struct
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STALL_END_S = []  # per stalled reader, seconds from its request to the server's end of it
STALL_FREE_S = []  # the same, to when the server held no fd for it any more
STALL_WATCH = {}  # /proc/net/tcp address of a stalled reader -> StallWatch
BENCH_PROC = []  # the ssehub-bench process, stopped if this one ends early


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--server-log", help="the server's stderr (for its stalled-stream count)")
    p.add_argument("--bench", required=True, help="ssehub-bench binary")
    p.add_argument("--out", required=True, help="directory for bench.out, samples.csv, summary.json")
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--rate", type=float, default=160, help="messages per second over all channels")
    p.add_argument("--payload-bytes", type=int, default=200)
    p.add_argument("--bench-subscribers", type=int, default=1600)
    p.add_argument("--churners", type=int, default=200)
    p.add_argument("--read-min", type=float, default=1.0)
    p.add_argument("--read-max", type=float, default=6.0)
    p.add_argument("--away-max", type=float, default=1.5)
    p.add_argument("--long-away-every", type=int, default=40,
                   help="one churn cycle in N stays away past the history (0 = never)")
    p.add_argument("--stall-every", type=float, default=10)
    p.add_argument("--stall-batch", type=int, default=20)
    p.add_argument("--stall-rcvbuf", type=int, default=4096)
    p.add_argument("--write-timeout", type=float, default=5)
    p.add_argument("--history-size", type=int, default=250)
    p.add_argument("--resume-every", type=float, default=2)
    p.add_argument("--sample-every", type=float, default=2)
    p.add_argument("--rss-tol-pct", type=float, default=10)
    p.add_argument("--rss-slack-mb", type=float, default=4)
    p.add_argument("--fd-tol-pct", type=float, default=10)
    p.add_argument("--fd-slack", type=int, default=20)
    p.add_argument("--fd-return-slack", type=int, default=10)
    p.add_argument("--fd-return-wait", type=float, default=30)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--title", default="")
    return p.parse_args()


A = None  # the arguments
T0 = None  # monotonic time the load started (publishing seen on every channel)
EPOCH = None  # the server's epoch (from the first id)
STOP = None  # asyncio.Event: load period over
FINAL = {}  # channel -> last seq once publishing stopped (set at the end)
FINAL_SET = None  # asyncio.Event: FINAL is known
C = collections.Counter()  # every count of the run
PROBLEMS = []  # (time, text): every failed check, in order
SAMPLES = []  # dicts: t, phase, rss_kb, fds, streams, cpu_ticks
_src = [0]


def now():
    return time.monotonic()


def rel():
    return now() - T0 if T0 is not None else 0.0


def problem(kind, text):
    C["problem:" + kind] += 1
    if len(PROBLEMS) < 200:
        PROBLEMS.append((round(rel(), 1), kind, text))


def next_source():
    # Source addresses 127.0.1.1..16, apart from the bench's 127.0.0.x, so that
    # no per-address limit of the server is approached.
    _src[0] = _src[0] % 16 + 1
    return f"127.0.1.{_src[0]}"


def new_socket(rst, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    except OSError:
        pass
    s.bind((next_source(), 0))
    if rst:
        # Close with RST (no TIME_WAIT left behind), like ssehub-bench.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return s


def channel_name(i):
    return f"soak-{i}"


def events_request(channel, last_id=None, by_query=False):
    path = f"/channels/{channel}/events?timeout=3600"
    headers = ""
    if last_id is not None:
        if by_query:
            path += "&lastEventId=" + last_id
        else:
            headers = f"Last-Event-ID: {last_id}\r\n"
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{A.port}\r\nAccept: text/event-stream\r\n"
            f"{headers}\r\n").encode()


async def http_get_json(path, timeout=5.0):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, A.port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{A.port}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            body = await asyncio.wait_for(reader.readexactly(int(m.group(1))), timeout)
        else:
            body = await asyncio.wait_for(reader.read(), timeout)
        return status, json.loads(body) if body else None
    finally:
        writer.close()


def split_id(text):
    """'epoch-seq' -> (epoch, seq) or None."""
    epoch, sep, seq = text.partition("-")
    if not sep or not seq.isdigit():
        return None
    return epoch, int(seq)


async def channel_info(channel):
    status, body = await http_get_json(f"/channels/{channel}")
    if status != 200:
        raise RuntimeError(f"GET /channels/{channel}: {status} {body}")
    first = split_id(body["first_id"])[1] if body.get("first_id") else None
    last = split_id(body["last_id"])[1] if body.get("last_id") else None
    return first, last


class Tracker:
    """Checks the message frames of one logical subscriber across its
    connections: each seq must be the previous one plus 1, unless a gap frame
    came just before and the message is its resume_from."""

    def __init__(self, who, channel, last=None, kind="churn"):
        self.who = who
        self.channel = channel
        self.token = f'"channel":"{channel}"'.encode()
        self.kind = kind
        self.first = None
        self.last = last
        self.pending = None  # (reason, resume_from seq or None, after) of a gap frame
        self.delivered = 0

    def message(self, frame):
        # frame: b"id: EPOCH-SEQ\ndata: {...}"
        nl = frame.find(b"\n")
        ident = frame[4:nl].decode()
        parsed = split_id(ident)
        if parsed is None or parsed[0] != EPOCH:
            problem("bad_id", f"{self.who}: message id {ident!r} (epoch {EPOCH})")
            return
        if self.token not in frame:
            problem("wrong_channel", f"{self.who}: frame of another channel: {frame[:160]!r}")
        seq = parsed[1]
        C[self.kind + "_delivered"] += 1
        self.delivered += 1
        if self.first is None:
            self.first = seq
        pending, self.pending = self.pending, None
        if self.last is None:
            if pending is not None and pending[1] is not None and seq != pending[1]:
                problem("gap_resume_mismatch",
                        f"{self.who}: gap frame said resume_from {pending[1]}, first message is {seq}")
            self.last = seq
            return
        expected = self.last + 1
        if seq < expected:
            C[self.kind + "_dup"] += 1
            problem("duplicate", f"{self.who}: seq {seq} after {self.last}")
            return
        if pending is not None:
            reason, resume_from, _after = pending
            if resume_from is None:
                C["covered_by_gap"] += seq - expected
            else:
                if seq != resume_from:
                    problem("gap_resume_mismatch",
                            f"{self.who}: gap frame said resume_from {resume_from}, next message is {seq} (last {self.last})")
                if resume_from > expected:
                    C["covered_by_gap"] += min(resume_from, seq) - expected
                if seq > resume_from >= expected:
                    C[self.kind + "_lost"] += seq - resume_from
                if resume_from == expected and reason == "before_history":
                    problem("needless_gap", f"{self.who}: before_history gap after {self.last} but nothing was missed")
        elif seq > expected:
            C[self.kind + "_lost"] += seq - expected
            problem("lost", f"{self.who}: seq {self.last} then {seq} without a gap frame ({seq - expected} missing)")
        self.last = seq

    def gap(self, frame, sent_id=None):
        data = None
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
        if not isinstance(data, dict):
            problem("bad_frame", f"{self.who}: gap frame without data: {frame!r}")
            return
        reason = data.get("reason")
        C["gap:" + str(reason)] += 1
        C[self.kind + "_gaps"] += 1
        rf = data.get("resume_from")
        rf_seq = None
        if rf is not None:
            parsed = split_id(rf)
            if parsed is None or parsed[0] != EPOCH:
                problem("bad_gap", f"{self.who}: gap resume_from {rf!r}")
            else:
                rf_seq = parsed[1]
        after = data.get("after")
        want_after = sent_id if sent_id is not None else (f"{EPOCH}-{self.last}" if self.last is not None else None)
        if want_after is not None and after != want_after:
            problem("bad_gap", f"{self.who}: gap after {after!r}, expected {want_after!r}")
        if data.get("channel") != self.channel:
            problem("bad_gap", f"{self.who}: gap frame for channel {data.get('channel')!r}")
        self.pending = (reason, rf_seq, after)
        return reason


def handle_frames(tracker, buf, sent_id, events):
    """Handles the complete frames in buf; returns what is left (a partial frame)."""
    frames = buf.split(b"\n\n")
    rest = frames.pop()
    for frame in frames:
        if frame.startswith(b"id: "):
            tracker.message(frame)
            events["messages"] += 1
        elif frame.startswith(b"event: "):
            kind = frame[7:frame.find(b"\n")] if b"\n" in frame else frame[7:]
            if kind == b"gap":
                reason = tracker.gap(frame, sent_id if events["messages"] == 0 and events["gaps"] == 0 else None)
                events["gaps"] += 1
                events["reasons"].append(reason)
            elif kind == b"timeout":
                C["timeout_frames"] += 1
            elif kind == b"failure":
                problem("failure_frame", f"{tracker.who}: {frame!r}")
                events["failed"] = True
            else:
                problem("bad_frame", f"{tracker.who}: unknown frame {frame[:120]!r}")
        elif frame.startswith(b"retry: ") or frame.startswith(b":"):
            if frame.startswith(b": shutdown"):
                problem("shutdown", f"{tracker.who}: shutdown comment during the run")
        elif frame:
            problem("bad_frame", f"{tracker.who}: unexpected frame {frame[:120]!r}")
    return rest


class Conn:
    """One event-stream connection read through asyncio streams."""

    def __init__(self, tracker, channel, last_id, by_query, rst):
        self.tracker = tracker
        self.channel = channel
        self.sent_id = last_id
        self.by_query = by_query
        self.rst = rst
        self.reader = self.writer = None
        self.buf = b""
        self.events = {"messages": 0, "gaps": 0, "reasons": [], "failed": False}
        self.eof = False

    async def open(self, timeout=10.0):
        loop = asyncio.get_running_loop()
        sock = new_socket(self.rst)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, A.port)), timeout)
            self.reader, self.writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        self.writer.write(events_request(self.channel, self.sent_id, self.by_query))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"text/event-stream" not in head.lower():
            body = b""
            try:
                body = await asyncio.wait_for(self.reader.read(4096), 2)
            except Exception:
                pass
            raise RuntimeError(f"status {status.decode()}: {body[:200]!r}")
        C["connections"] += 1

    async def read_until(self, deadline, done=None, poll=None):
        """Reads frames until the monotonic deadline, EOF, or done() is true
        (checked after each read, and every `poll` seconds if given)."""
        while True:
            if done is not None and done():
                return True
            left = deadline - now()
            if left <= 0:
                return False
            if poll is not None:
                left = min(left, poll)
            try:
                data = await asyncio.wait_for(self.reader.read(262144), left)
            except asyncio.TimeoutError:
                continue
            except (ConnectionError, OSError) as error:
                problem("stream_error", f"{self.tracker.who}: read: {error!r}")
                self.eof = True
                return False
            if not data:
                self.eof = True
                if not self.events["failed"]:
                    problem("stream_ended", f"{self.tracker.who}: the server ended the stream")
                return False
            self.buf = handle_frames(self.tracker, self.buf + data, self.sent_id, self.events)
            if self.events["failed"]:
                self.eof = True
                return False

    def close(self):
        if self.writer is not None:
            self.writer.close()
            C["closed_rst" if self.rst else "closed_fin"] += 1


async def sleep_or_stop(seconds):
    try:
        await asyncio.wait_for(STOP.wait(), seconds)
    except asyncio.TimeoutError:
        pass


# ---------------------------------------------------------------- churners

async def churner(i, chains):
    rnd = random.Random(A.seed * 7919 + i if A.seed is not None else None)
    channel = channel_name(i % A.channels)
    tracker = Tracker(f"churner {i} on {channel}", channel)
    chains.append(tracker)
    await sleep_or_stop(rnd.uniform(0, 5))
    cycle = 0
    refused = 0

    def caught_up():
        # Once publishing has stopped: the newest message of the channel seen.
        return FINAL_SET.is_set() and (tracker.last is None or tracker.last >= FINAL[channel])

    while True:
        final = STOP.is_set()
        last_id = f"{EPOCH}-{tracker.last}" if tracker.last is not None else None
        conn = Conn(tracker, channel, last_id, by_query=(cycle % 5 == 3), rst=rnd.random() < 0.7)
        cycle += 1
        try:
            await conn.open()
            refused = 0
        except Exception as error:
            problem("connect", f"{tracker.who}: {error!r}")
            conn.close()
            refused += 1
            if refused > 20:
                return
            await (asyncio.sleep(1) if final else sleep_or_stop(1))
            continue
        C["churn_connects"] += 1
        if last_id is not None:
            C["churn_resumes"] += 1
        if not final:
            await conn.read_until(now() + rnd.uniform(A.read_min, A.read_max), done=STOP.is_set, poll=1.0)
        if STOP.is_set() and not conn.eof:
            # The load is over: catch up to the channel's newest message on
            # this connection, then stop.
            ok = await conn.read_until(now() + 120, done=caught_up, poll=0.25)
            conn.close()
            if ok:
                if tracker.last is None:
                    problem("no_messages", f"{tracker.who}: no message in the whole run")
                return
            if conn.eof:
                continue  # the stream ended (reported): reconnect and resume
            missing = FINAL.get(channel, 0) - (tracker.last or 0)
            C["churn_lost"] += max(0, missing)
            problem("lost", f"{tracker.who}: at the end, last seq {tracker.last}, channel's last {FINAL.get(channel)}")
            return
        conn.close()
        if STOP.is_set():
            continue
        away = rnd.uniform(0, A.away_max)
        if A.long_away_every and rnd.randrange(A.long_away_every) == 0:
            # Longer than the history reaches back at this rate: a gap frame is due.
            away = 1.3 * A.history_size * A.channels / A.rate
            C["churn_long_away"] += 1
        await sleep_or_stop(away)


# ---------------------------------------------------------- stalled readers

async def stall_one(i):
    loop = asyncio.get_running_loop()
    channel = channel_name(i % A.channels)
    sock = new_socket(rst=True, rcvbuf=A.stall_rcvbuf)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, A.port)), 10)
        # The oldest id there is: the whole retained history is replayed
        # (after a gap frame), more than the socket buffers hold.
        await loop.sock_sendall(sock, events_request(channel, f"{EPOCH}-1"))
    except Exception as error:
        problem("connect", f"stalled reader {i}: {error!r}")
        sock.close()
        return
    C["stalled_opened"] += 1
    # Never read, for the write timeout and a margin, while the server's side
    # of the connection is watched in /proc/net/tcp (see stall_watcher).
    t_open = now()
    key = proc_net_address(sock.getsockname())
    watch = STALL_WATCH[key] = StallWatch()
    try:
        how = await asyncio.wait_for(asyncio.shield(watch.ended), A.write_timeout + max(3.0, A.write_timeout))
        ended_after = now() - t_open
        STALL_END_S.append(ended_after)
        C["stalled_" + how] += 1
        if ended_after < A.write_timeout - 0.5:
            problem("stalled_early", f"stalled reader {i}: ended {ended_after:.1f} s after it opened, "
                    f"before the write timeout of {A.write_timeout:g} s")
        try:
            await asyncio.wait_for(asyncio.shield(watch.freed), 10)
            STALL_FREE_S.append(now() - t_open)
        except asyncio.TimeoutError:
            problem("stalled_fd_held", f"stalled reader {i}: the server still holds the socket "
                    f"{now() - t_open - ended_after:.0f} s after its connection ended")
    except asyncio.TimeoutError:
        pass
    finally:
        STALL_WATCH.pop(key, None)
    # Then drain: the server must have ended the stream (EOF or reset after
    # what it had written), not be sending live messages still.
    got = 0
    head = b""
    ended = False
    deadline = now() + 10
    while now() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 262144), deadline - now())
        except asyncio.TimeoutError:
            break
        except (ConnectionError, OSError):
            ended = True
            C["stalled_reset"] += 1
            break
        if not data:
            ended = True
            break
        if len(head) < 16:
            head += data[:16]
        got += len(data)
    sock.close()
    if head and not head.startswith(b"HTTP/1.1 200"):
        problem("stalled_status", f"stalled reader {i}: answer {head!r}")
    if ended:
        C["stalled_ended"] += 1
    else:
        C["stalled_not_ended"] += 1
        problem("stalled_not_ended",
                f"stalled reader {i} on {channel}: still streaming {A.write_timeout + max(3.0, A.write_timeout):.0f} s after it stopped reading ({got} bytes drained)")


def proc_net_address(address):
    """('127.0.1.3', 40000) -> '0301007F:9C40', as /proc/net/tcp writes it."""
    ip, port = address
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(ip))[0], port)


class StallWatch:
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.inode = None  # of the server's socket, once seen
        self.ended = loop.create_future()  # "closed" or "dropped"
        self.freed = loop.create_future()  # the server holds no fd for it


async def stall_watcher():
    """Every 0.25 s, looks for the server's side of each watched stalled
    connection in /proc/net/tcp: inode 0 means the server closed its socket
    (an orphan the kernel still tries to flush), gone means the kernel dropped
    the connection (the server sets TCP_USER_TIMEOUT to its write timeout); in
    the second case the socket is freed once no fd of the server refers to it."""
    server_local = proc_net_address((HOST, A.port))
    while True:
        await asyncio.sleep(0.25)
        if not STALL_WATCH:
            continue
        seen = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == server_local:
                    seen[fields[2]] = fields[9]  # remote address -> inode
        held = None
        for key, w in list(STALL_WATCH.items()):
            if not w.ended.done():
                inode = seen.get(key)
                if inode is None:
                    w.ended.set_result("dropped")
                elif inode == "0":
                    w.ended.set_result("closed")
                    w.freed.set_result(True)
                else:
                    w.inode = inode
            if w.ended.done() and not w.freed.done():
                if held is None:
                    held = set()
                    fd_dir = f"/proc/{A.server_pid}/fd"
                    for fd in os.listdir(fd_dir):
                        try:
                            held.add(os.readlink(f"{fd_dir}/{fd}"))
                        except OSError:
                            pass
                if w.inode is None or f"socket:[{w.inode}]" not in held:
                    w.freed.set_result(True)


async def staller(tasks):
    i = 0
    while not STOP.is_set():
        for _ in range(A.stall_batch):
            tasks.append(asyncio.create_task(stall_one(i)))
            i += 1
        await sleep_or_stop(A.stall_every)


# ----------------------------------------------------------- resume checks

RESUME_KINDS = ["in_history", "before_history", "in_history_query", "at_last", "other_epoch",
                "in_history", "unknown_id", "before_history", "unparsable"]


async def resume_check(n, rnd):
    kind = RESUME_KINDS[n % len(RESUME_KINDS)]
    channel = channel_name(n % A.channels)
    first, last = await channel_info(channel)
    if first is None or last is None:
        return
    margin = max(10, A.history_size // 5)
    expect_gap = None
    if kind in ("in_history", "in_history_query"):
        if last - first < 2 * margin:
            return
        p = rnd.randint(first + margin, last - 1)
        sent, start = f"{EPOCH}-{p}", p
    elif kind == "at_last":
        sent, start = f"{EPOCH}-{last}", last
    elif kind == "before_history":
        if first <= 2:
            return
        p = rnd.randint(max(1, first - 1 - 5 * A.history_size), first - 2)
        sent, start, expect_gap = f"{EPOCH}-{p}", p, "before_history"
    elif kind == "other_epoch":
        other = "%08x" % ((int(EPOCH, 16) + 1 + rnd.randrange(0xfffffff)) % 0x100000000)
        sent, start, expect_gap = f"{other}-{rnd.randint(1, last)}", None, "other_epoch"
    elif kind == "unknown_id":
        sent, start, expect_gap = f"{EPOCH}-{last + 1 + rnd.randrange(1000)}", None, "unknown_id"
    else:
        sent, start, expect_gap = "not-an-id", None, "unknown_id"
    tracker = Tracker(f"resume {n} ({kind}, {sent}) on {channel}", channel, last=start, kind="resume")
    conn = Conn(tracker, channel, sent, by_query=(kind == "in_history_query"), rst=True)
    try:
        await conn.open()
    except Exception as error:
        problem("connect", f"{tracker.who}: {error!r}")
        conn.close()
        return
    C["resumes"] += 1
    C["resume:" + kind] += 1
    target = last + 1
    ok = await conn.read_until(now() + 15, done=lambda: tracker.last is not None and tracker.last >= target)
    conn.close()
    if not ok:
        problem("resume_incomplete", f"{tracker.who}: reached seq {tracker.last}, wanted {target}")
        return
    reasons = conn.events["reasons"]
    if expect_gap is None and reasons:
        problem("needless_gap", f"{tracker.who}: gap frame(s) {reasons} though the history reaches back (first {first}, last {last})")
    if expect_gap is not None and reasons[:1] != [expect_gap]:
        problem("missing_gap", f"{tracker.who}: expected a {expect_gap} gap frame first, got {reasons}")
    if kind in ("in_history", "in_history_query", "at_last") and tracker.first != start + 1:
        problem("resume_start", f"{tracker.who}: first message {tracker.first}, expected {start + 1}")


async def resumer():
    rnd = random.Random(A.seed)
    n = 0
    while not STOP.is_set():
        try:
            await resume_check(n, rnd)
        except Exception as error:
            problem("resume_error", f"resume check {n}: {error!r}")
        n += 1
        await sleep_or_stop(A.resume_every)


# ---------------------------------------------------------------- sampling

class ServerGone(Exception):
    def __str__(self):
        return "the server process is gone"


def read_proc(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = int(fields[11]) + int(fields[12])  # utime + stime
    return rss, fds, cpu


async def sample(phase):
    try:
        rss, fds, cpu = read_proc(A.server_pid)
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        raise ServerGone()
    streams = None
    try:
        status, body = await http_get_json("/healthz", 2)
        streams = body.get("subscribers") if isinstance(body, dict) else None
    except Exception as error:
        C["healthz_errors"] += 1
        if C["healthz_errors"] <= 3:
            problem("healthz", repr(error))
    SAMPLES.append({"t": round(rel(), 2), "phase": phase, "rss_kb": rss, "fds": fds,
                    "streams": streams, "cpu_ticks": cpu})
    return rss, fds


async def sampler(phase_of):
    while True:
        await sample(phase_of())
        await asyncio.sleep(A.sample_every)


# -------------------------------------------------------------------- main

def stats(values):
    values = sorted(values)
    return values[0], statistics.median(values), values[-1]


def fmt_int(n):
    return f"{n:,}"


async def main():
    global A, T0, EPOCH, STOP, FINAL_SET
    A = parse_args()
    if A.seed is None:
        A.seed = random.randrange(1 << 30)
    random.seed(A.seed)
    STOP = asyncio.Event()
    FINAL_SET = asyncio.Event()
    os.makedirs(A.out, exist_ok=True)
    started = time.time()

    # Baseline before any load.
    for _ in range(3):
        await sample("before")
        await asyncio.sleep(0.3)
    base_rss, base_fds = SAMPLES[-1]["rss_kb"], SAMPLES[-1]["fds"]

    phase = ["load"]
    bench_out = open(os.path.join(A.out, "bench.out"), "w")
    bench_cmd = [A.bench, "fanout", "--server-name", "ssehub", "--label", "soak",
                 "--server-pid", str(A.server_pid), "--channel-prefix", "soak",
                 "--sub-url", f"http://{HOST}:{A.port}/channels/{{channel}}/events?timeout=3600",
                 "--pub-url", f"http://{HOST}:{A.port}/channels/{{channel}}/messages",
                 "--subscribers", str(A.bench_subscribers), "--channels", str(A.channels),
                 "--rate", str(A.rate), "--seconds", str(A.seconds),
                 "--payload-bytes", str(A.payload_bytes), "--drain-timeout", "30"]
    bench = await asyncio.create_subprocess_exec(*bench_cmd, stdout=bench_out, stderr=asyncio.subprocess.STDOUT)
    BENCH_PROC.append(bench)
    print(f"soak: ssehub-bench fanout started (pid {bench.pid}): {A.bench_subscribers} steady subscribers, "
          f"{A.rate:g} msg/s over {A.channels} channels, {A.seconds:.0f} s", flush=True)

    # The load starts when every channel has a message (the bench opens its
    # subscribers first).
    t_wait = now()
    while True:
        lasts = [(await channel_info(channel_name(c)))[1] for c in range(A.channels)]
        if all(x is not None for x in lasts):
            break
        if bench.returncode is not None or now() - t_wait > 180:
            print("soak: FAIL: the bench did not start publishing; see bench.out", file=sys.stderr)
            bench_out.flush()
            return 1
        await asyncio.sleep(0.2)
    T0 = now()
    status, body = await http_get_json(f"/channels/{channel_name(0)}")
    EPOCH = body["last_id"].split("-")[0]
    samp = asyncio.create_task(sampler(lambda: phase[0]))
    print(f"soak: publishing (epoch {EPOCH}); {A.churners} churners, {A.stall_batch} stalled readers "
          f"every {A.stall_every:g} s, a resume check every {A.resume_every:g} s", flush=True)

    chains = []
    churners = [asyncio.create_task(churner(i, chains)) for i in range(A.churners)]
    stall_tasks = []
    stall_loop = asyncio.create_task(staller(stall_tasks))
    watcher = asyncio.create_task(stall_watcher())
    resume_loop = asyncio.create_task(resumer())

    # Progress every minute or so.
    end_at = T0 + A.seconds
    next_report = T0 + min(60, A.seconds / 4)
    while now() < end_at:
        await asyncio.sleep(min(1.0, max(0.0, end_at - now())))
        if samp.done():
            await samp  # raises what ended the sampler (the server is gone)
        if bench.returncode is not None:
            if bench.returncode != 0 or now() < end_at - 5:
                problem("bench_early", f"ssehub-bench exited {end_at - now():.0f} s early (status {bench.returncode})")
            break
        if now() >= next_report and SAMPLES:
            s = SAMPLES[-1]
            print(f"  {rel():5.0f} s: RSS {s['rss_kb'] / 1024:.1f} MB, {s['fds']} fds, {s['streams']} streams; "
                  f"churn connects {C['churn_connects']}, checked {C['churn_delivered'] + C['resume_delivered']:,}, "
                  f"resumes {C['resumes']}, stalled ended {C['stalled_ended']}/{C['stalled_opened']}, "
                  f"problems {sum(v for k, v in C.items() if k.startswith('problem:'))}", flush=True)
            next_report += 60
    load_end = rel()
    STOP.set()
    phase[0] = "drain"
    await asyncio.gather(stall_loop, resume_loop, return_exceptions=True)

    # The bench stops publishing after its --seconds and drains its subscribers.
    try:
        await asyncio.wait_for(bench.wait(), 120)
    except asyncio.TimeoutError:
        problem("bench_hung", "ssehub-bench did not exit within 120 s after the load period")
        bench.kill()
        await bench.wait()
    bench_out.close()
    result = None
    with open(os.path.join(A.out, "bench.out")) as f:
        for line in f:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
    if result is None:
        problem("bench_result", "no RESULT line from ssehub-bench (see bench.out)")
        result = {}
    elif bench.returncode != 0 or not result.get("ok"):
        problem("bench_failed", f"ssehub-bench reported a failure (exit {bench.returncode}): lost {result.get('lost')}, "
                f"dup {result.get('dup')}, extra {result.get('extra')}, post errors {result.get('post_errors')}, "
                f"streams ended {result.get('streams_ended')}, gaps {result.get('gap_frames')}, errors {result.get('errors')}")

    # Publishing is over: the channels' last ids are final.
    for c in range(A.channels):
        FINAL[channel_name(c)] = (await channel_info(channel_name(c)))[1] or 0
    FINAL_SET.set()
    await asyncio.gather(*churners, return_exceptions=True)
    await asyncio.gather(*stall_tasks, return_exceptions=True)

    # After the load: the server's files must come back near the baseline.
    phase[0] = "after"
    t_after = now()
    while True:
        rss, fds = await sample("after")
        if fds <= base_fds + A.fd_return_slack or now() - t_after > A.fd_return_wait:
            break
        await asyncio.sleep(1)
    fd_return_s = now() - t_after
    await asyncio.sleep(1)
    samp.cancel()
    watcher.cancel()
    end_rss, end_fds = (await sample("after"))

    # ------------------------------------------------------------ verdict
    stored = sum(FINAL.values())
    published = result.get("published", 0)
    if stored != published:
        problem("ack_mismatch", f"the channels hold {stored} messages, the bench got {published} 201 answers"
                + (" (fewer stored than acknowledged: acknowledged messages lost)" if stored < published else ""))
    load = [s for s in SAMPLES if s["phase"] == "load"]
    q = load_end / 4
    q2 = [s for s in load if q <= s["t"] < 2 * q]
    q4 = [s for s in load if 3 * q <= s["t"] <= load_end]
    growth = {}
    for key, tol, slack, unit in (("rss_kb", A.rss_tol_pct, A.rss_slack_mb * 1024, "KB"),
                                  ("fds", A.fd_tol_pct, A.fd_slack, "")):
        if len(q2) >= 2 and len(q4) >= 2:
            m2 = statistics.mean(s[key] for s in q2)
            m4 = statistics.mean(s[key] for s in q4)
            limit = max(m2 * tol / 100, slack)
            growth[key] = (m2, m4, limit)
            if m4 - m2 > limit:
                problem("growth", f"{key}: last-quarter mean {m4:.0f} vs second-quarter mean {m2:.0f} "
                        f"(+{m4 - m2:.0f}{unit}, allowed +{limit:.0f}{unit})")
        else:
            problem("growth", f"too few samples to compare quarters ({len(q2)}, {len(q4)})")
    if end_fds > base_fds + A.fd_return_slack:
        problem("fds_not_returned", f"{end_fds} fds {A.fd_return_wait:.0f} s after the load, baseline {base_fds} "
                f"(allowed +{A.fd_return_slack})")
    if C["stalled_opened"] == 0:
        problem("no_stalled", "no stalled reader was opened")
    if C["resumes"] == 0:
        problem("no_resume", "no resume check ran")
    cpu_load = [s for s in SAMPLES if s["phase"] == "load"]
    cpu_pct = (100 * (cpu_load[-1]["cpu_ticks"] - cpu_load[0]["cpu_ticks"]) / CLK_TCK
               / max(1e-9, cpu_load[-1]["t"] - cpu_load[0]["t"])) if len(cpu_load) >= 2 else 0.0
    logged_stalled = 0
    if A.server_log and os.path.exists(A.server_log):
        with open(A.server_log, errors="replace") as f:
            for line in f:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                if "read nothing for the write timeout" in line:
                    m = re.search(r"streams\s*=\s*(\d+)", line)
                    logged_stalled += int(m.group(1)) if m else 0

    usage = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu = usage.ru_utime + usage.ru_stime
    # The bench counts every process but itself and the server as "others".
    others = max(0.0, (result.get("others_cpu_s") or 0) - own_cpu)
    problems = sum(v for k, v in C.items() if k.startswith("problem:"))
    lost = C["churn_lost"] + C["resume_lost"] + result.get("lost", 0) + max(0, published - stored)
    dup = C["churn_dup"] + C["resume_dup"] + result.get("dup", 0) + result.get("extra", 0)
    all_rss = [s["rss_kb"] / 1024 for s in SAMPLES]
    all_fds = [s["fds"] for s in SAMPLES]
    streams = [s["streams"] for s in SAMPLES if s["streams"] is not None and s["phase"] == "load"]
    rss_s, fd_s = stats(all_rss), stats(all_fds)
    gaps = {k[4:]: v for k, v in sorted(C.items()) if k.startswith("gap:")}
    resume_kinds = {k[7:]: v for k, v in sorted(C.items()) if k.startswith("resume:")}
    stall_end = " / ".join(f"{v:.1f}" for v in stats(STALL_END_S)) if STALL_END_S else "n/a"
    stall_free = " / ".join(f"{v:.1f}" for v in stats(STALL_FREE_S)) if STALL_FREE_S else "n/a"

    def growth_text(key, scale, unit):
        if key not in growth:
            return "n/a"
        m2, m4, limit = growth[key]
        return (f"{m2 / scale:.1f} → {m4 / scale:.1f}{unit} ({(m4 - m2) / scale:+.1f}{unit}, "
                f"{100 * (m4 - m2) / m2:+.1f} %; allowed +{limit / scale:.1f}{unit})")

    rows = [
        ("duration", f"{load_end:.0f} s of load (+ {now() - T0 - load_end:.0f} s drain and settle), seed {A.seed}"),
        ("messages published / acknowledged (201) / stored",
         f"{fmt_int(published + result.get('post_errors', 0))} / {fmt_int(published)} / {fmt_int(stored)} "
         f"({result.get('posts_per_s', 0):.1f} msg/s, {A.channels} channels; "
         f"POST errors {result.get('post_errors', 0)})"),
        ("deliveries checked",
         f"{fmt_int(result.get('delivered', 0) + C['churn_delivered'] + C['resume_delivered'])} "
         f"(steady {fmt_int(result.get('delivered', 0))}, churn {fmt_int(C['churn_delivered'])}, "
         f"resume {fmt_int(C['resume_delivered'])})"),
        ("lost / duplicated", f"{lost} / {dup}"),
        ("steady subscribers (bench)", f"{A.bench_subscribers}, lost {result.get('lost', '?')}, dup {result.get('dup', '?')}, "
         f"streams ended {result.get('streams_ended', '?')}, read p99 {result.get('latency_ms', {}).get('p99', float('nan')):.1f} ms"),
        ("churn", f"{A.churners} subscribers, {fmt_int(C['churn_connects'])} connections "
         f"({fmt_int(C['churn_resumes'])} with Last-Event-ID/lastEventId; closed {fmt_int(C['closed_rst'])} RST, "
         f"{fmt_int(C['closed_fin'])} FIN), {C['churn_long_away']} long absences"),
        ("resumes checked", f"{C['resumes']} " + json.dumps(resume_kinds)),
        ("gap frames", f"{sum(gaps.values())} {json.dumps(gaps)}, covering {fmt_int(C['covered_by_gap'])} messages"),
        ("stalled readers", f"{C['stalled_opened']} opened, {C['stalled_ended']} ended by the server "
         f"({C['stalled_closed']} closed by the server, {C['stalled_dropped']} dropped by its kernel), "
         f"{C['stalled_not_ended']} not ended; ended {stall_end} s after the request, fd freed {stall_free} s after it "
         f"(min / median / max); "
         f"the server's log counted {logged_stalled}"),
        ("server RSS MB min / median / max", f"{rss_s[0]:.1f} / {rss_s[1]:.1f} / {rss_s[2]:.1f}"),
        ("server RSS MB start / end", f"{base_rss / 1024:.1f} / {end_rss / 1024:.1f}"),
        ("RSS 2nd → last quarter (mean)", growth_text("rss_kb", 1024, " MB")),
        ("server fds min / median / max", f"{fd_s[0]} / {fd_s[1]:g} / {fd_s[2]}"),
        ("server fds start / end", f"{base_fds} / {end_fds} ({fd_return_s:.0f} s after the load)"),
        ("fds 2nd → last quarter (mean)", growth_text("fds", 1, "")),
        ("open streams during load min / median / max", " / ".join(f"{v:g}" for v in stats(streams)) if streams else "n/a"),
        ("CPU", f"server {cpu_pct:.0f} % of CPU 0 during the load; on CPU 1 ssehub-bench {result.get('bench_cpu_s') or 0:.0f} s, "
         f"soak.py {own_cpu:.0f} s; other processes {others:.0f} s"),
    ]
    title = A.title or "soak"
    lines = [f"{title}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    verdict = ("PASS: no acknowledged message lost or duplicated, every stalled reader ended, "
               "no growth of RSS or fds beyond the tolerance") if problems == 0 else \
        f"FAIL: {problems} problem(s): " + ", ".join(f"{k[8:]} {v}" for k, v in sorted(C.items()) if k.startswith("problem:"))
    print()
    print("\n".join(lines))
    print()
    if PROBLEMS:
        print("first problems (time since the load started, kind, what):")
        for t, kind, text in PROBLEMS[:20]:
            print(f"  {t:7.1f} s  {kind}: {text}")
        print()
    print(f"soak: {verdict}")
    with open(os.path.join(A.out, "samples.csv"), "w") as f:
        f.write("t,phase,rss_kb,fds,streams,cpu_ticks\n")
        for s in SAMPLES:
            f.write(f"{s['t']},{s['phase']},{s['rss_kb']},{s['fds']},{'' if s['streams'] is None else s['streams']},{s['cpu_ticks']}\n")
    with open(os.path.join(A.out, "summary.json"), "w") as f:
        json.dump({"started": started, "args": vars(A), "counts": dict(C), "problems": PROBLEMS,
                   "final_last_seq": FINAL, "bench_result": result, "verdict": verdict}, f, indent=1)
    with open(os.path.join(A.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n" + verdict + "\n")
    return 0 if problems == 0 else 1


def run():
    try:
        return asyncio.run(main())
    except Exception as error:
        print(f"soak: FAIL: {error}", file=sys.stderr)
        for t, kind, text in PROBLEMS[:20]:
            print(f"  {t:7.1f} s  {kind}: {text}", file=sys.stderr)
        return 1
    finally:
        for proc in BENCH_PROC:
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    sys.exit(run())
