# Stands in for redis:7 (tests only; see local-images.yml): Debian's redis-server, run as the
# user redis in /data, where `--appendonly yes` writes.
ARG BASE_IMAGE=dcl-compose-test/python:3.11-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/
WORKDIR /data
USER redis
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]
