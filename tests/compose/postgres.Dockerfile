# Stands in for postgres:16 (tests only; see local-images.yml): Debian's PostgreSQL, with the
# official image's environment contract for what docker-compose.yml uses (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; see postgres-entrypoint.sh).
ARG BASE_IMAGE=dcl-compose-test/python:3.11-bookworm
FROM ${BASE_IMAGE}
# No default cluster: the entrypoint makes one in $PGDATA on first start.
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/lib/postgresql/*/bin /usr/local/lib/postgresql-bin \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/local/lib/postgresql-bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
USER postgres
# A fast shutdown, as the official image does.
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]
