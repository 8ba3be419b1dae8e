"""A replication job's view of an NBD export, through libnbd (python3-libnbd), for the lab.

One process, one mode, JSON lines on stdout; the test drives it through stdin.

  stream URI BLOCK_SIZE BLOCKS [OPS_PER_S]
      One connection, never reopened (at most OPS_PER_S write+read pairs a second if given). Writes block after block of verifiable data (each block
      names its index and generation; the rest is a hash of both) and reads each back at once.
      Every 200 ms a line {"kind":"tick","t":<epoch ms>,"ops","bytes","errors","maxLatMs"} for
      that interval. On "stop" (stdin): flush, read every block written and compare it with the
      last generation written there, then {"kind":"summary",...} and exit.

  watch BASE_URI EXPORT INTERVAL_MS
      Every INTERVAL_MS a new connection: list the exports (NBD_OPT_LIST), open EXPORT
      (NBD_OPT_GO), read its first 4 KiB; one line per sample
      {"kind":"sample","t","listed","opened","io","error"}. io is "ok", "EIO" or the error.
      "stop" on stdin ends it.

  hold URI
      One connection held open; commands on stdin, one JSON reply each:
      {"op":"write","off","len","byte"} {"op":"read","off","len"} (reply has "bytes": the distinct
      byte values read) {"op":"flush"} {"op":"close"}; a command's "id" comes back in its reply.
"""

import errno
import hashlib
import json
import struct
import sys
import threading
import time

import nbd

MAGIC = 0x564C4C495645  # "VLLIVE"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def now_ms():
    return time.time() * 1000.0


def err_text(e):
    eio = getattr(e, "errno", None) == errno.EIO or "(EIO)" in str(e)
    return "EIO" if eio else str(e)


def stop_event():
    """Set when stdin says "stop" or closes."""
    ev = threading.Event()

    def read():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        ev.set()

    threading.Thread(target=read, daemon=True).start()
    return ev


def block(index, gen, size):
    head = struct.pack("<QQQ", MAGIC, index, gen)
    body = hashlib.sha256(head).digest()
    return (head + body * (size // len(body) + 1))[:size]


def stream(uri, block_size, blocks, rate=0):
    stop = stop_event()
    pace = 1.0 / rate if rate > 0 else 0.0
    next_op = time.monotonic()
    h = nbd.NBD()
    h.connect_uri(uri)
    n = min(blocks, h.get_size() // block_size)
    gens = [0] * n
    total = {"ops": 0, "bytes": 0, "errors": 0, "mismatches": 0, "maxLatMs": 0.0}
    first_errors = []
    tick = {"ops": 0, "bytes": 0, "errors": 0, "maxLatMs": 0.0}
    next_tick = now_ms() + 200
    i = 0
    started = now_ms()
    while not stop.is_set():
        b, g = i % n, i // n + 1
        data = block(b, g, block_size)
        t0 = time.monotonic()
        try:
            h.pwrite(data, b * block_size)
            gens[b] = g  # written (or unknown if the read below fails: counted as an error)
            if h.pread(block_size, b * block_size) != data:
                total["mismatches"] += 1
            tick["ops"] += 1
            tick["bytes"] += 2 * block_size
        except nbd.Error as e:
            tick["errors"] += 1
            if len(first_errors) < 5:
                first_errors.append({"t": now_ms(), "error": err_text(e)})
        lat = (time.monotonic() - t0) * 1000.0
        tick["maxLatMs"] = max(tick["maxLatMs"], lat)
        i += 1
        if pace:
            next_op += pace
            delay = next_op - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_op = time.monotonic()
        t = now_ms()
        if t >= next_tick:
            emit({"kind": "tick", "t": t, **tick})
            for k in ("ops", "bytes", "errors"):
                total[k] += tick[k]
            total["maxLatMs"] = max(total["maxLatMs"], tick["maxLatMs"])
            tick = {"ops": 0, "bytes": 0, "errors": 0, "maxLatMs": 0.0}
            next_tick = t + 200
    for k in ("ops", "bytes", "errors"):
        total[k] += tick[k]
    total["maxLatMs"] = max(total["maxLatMs"], tick["maxLatMs"])
    ended = now_ms()
    # Every block as last written, read back over the same connection.
    verified, bad = 0, 0
    try:
        if h.can_flush():  # nbd-server does not offer it by default
            h.flush()
        for b, g in enumerate(gens):
            if g == 0:
                continue
            if h.pread(block_size, b * block_size) == block(b, g, block_size):
                verified += 1
            else:
                bad += 1
    except nbd.Error as e:
        first_errors.append({"t": now_ms(), "error": "verify: " + err_text(e)})
        bad += 1
    emit(
        {
            "kind": "summary",
            "connects": 1,
            "startedMs": started,
            "endedMs": ended,
            **total,
            "blocksVerified": verified,
            "blocksBad": bad,
            "firstErrors": first_errors,
        }
    )
    h.shutdown()


def watch(base_uri, export, interval_ms):
    stop = stop_event()
    next_at = time.monotonic()
    while not stop.is_set():
        t = now_ms()
        names = []
        sample = {"kind": "sample", "t": t, "listed": False, "opened": False, "io": None, "error": None}
        h = nbd.NBD()
        try:
            h.set_opt_mode(True)
            h.connect_uri(base_uri)
            h.opt_list(lambda name, _description: names.append(name) or 0)
            sample["listed"] = export in names
            h.set_export_name(export)
            h.opt_go()
            sample["opened"] = True
            try:
                h.pread(4096, 0)
                sample["io"] = "ok"
            except nbd.Error as e:
                sample["io"] = err_text(e)
            h.shutdown()
        except nbd.Error as e:
            sample["error"] = str(e)
        del h  # closes the socket
        sample["ms"] = now_ms() - t
        emit(sample)
        next_at += interval_ms / 1000.0
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()


def hold(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    emit({"kind": "ready", "size": h.get_size()})
    for line in sys.stdin:
        cmd = json.loads(line)
        reply = {"kind": "reply", "id": cmd.get("id"), "op": cmd["op"], "ok": True}
        try:
            if cmd["op"] == "write":
                h.pwrite(bytes([cmd["byte"]]) * cmd["len"], cmd["off"])
            elif cmd["op"] == "read":
                reply["bytes"] = sorted(set(h.pread(cmd["len"], cmd["off"])))
            elif cmd["op"] == "flush":
                if h.can_flush():
                    h.flush()
            elif cmd["op"] == "close":
                h.shutdown()
                emit(reply)
                return
        except nbd.Error as e:
            reply["ok"] = False
            reply["error"] = err_text(e)
        emit(reply)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stream":
        stream(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0)
    elif mode == "watch":
        watch(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "hold":
        hold(sys.argv[2])
    else:
        sys.exit("usage: nbd-live.py stream|watch|hold ...")
