#!/bin/sh
# As the official image does: a redis-server given no config file listens on every address
# with protected mode off, so that the other containers reach it by its service name.
if [ "$1" = redis-server ] && { [ $# -eq 1 ] || [ "${2#-}" != "$2" ]; }; then
    set -- "$@" --protected-mode no
fi
exec "$@"
