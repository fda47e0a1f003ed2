"""Deletes a service's JetStream streams on the local NATS server
(127.0.0.1:4222) through the JetStream API, speaking the NATS protocol
directly, so the benchmark scripts need no NATS client:
`python3 scripts/delete-stream.py NAME`. Deletes the stream NAME and the
stream of its replay bucket (`KV_NAME_REPLAYS`), which the service creates
beside it.
"""
import socket
import sys

s = socket.create_connection(("127.0.0.1", 4222), timeout=5)
f = s.makefile("rb")
f.readline()
s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.bench 1\r\n')
for name in (sys.argv[1], f"KV_{sys.argv[1]}_REPLAYS"):
    s.sendall(b"PUB $JS.API.STREAM.DELETE.%s _INBOX.bench 0\r\n\r\n" % name.encode())
    while (line := f.readline()) and not line.startswith(b"MSG"):
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
    f.readline()  # the reply's body
