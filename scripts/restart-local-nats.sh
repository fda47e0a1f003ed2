#!/bin/sh
# A fault for the soak: SIGKILL the local nats-server on 127.0.0.1:4222 and
# start it again on the same store (as the machine's own one runs), e.g.
#   SOAK=600 SOAK_FAULT_CMD=scripts/restart-local-nats.sh SOAK_FAULT_EVERY=60 scripts/bench.sh
# Other nats-server processes (a test cluster) are left alone.
pkill -9 -f "nats-server -a 127.0.0.1 -p 4222 "
sleep 1
setsid nohup /usr/sbin/nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
    -l /var/log/nats-server.log >/dev/null 2>&1 &
