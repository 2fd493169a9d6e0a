#!/bin/bash
# Health check of the Prometheus image: exit 0 when GET /-/ready answers 200 (no wget/curl needed).
exec 3<>"/dev/tcp/127.0.0.1/${PROMETHEUS_PORT:-9090}" || exit 1
printf 'GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
    *" 200 "*) exit 0 ;;
    *) echo "not ready: $status" >&2; exit 1 ;;
esac
