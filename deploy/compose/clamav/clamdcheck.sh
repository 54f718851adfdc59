#!/bin/bash
# The upstream image's health check by the same name: clamd answers PING with PONG on its TCP port.
exec 3<>/dev/tcp/127.0.0.1/3310 || exit 1
printf 'zPING\0' >&3
IFS= read -r -d '' -t 5 reply <&3
[ "$reply" = PONG ]
