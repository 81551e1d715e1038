# Stand-in for postgres:16 (nothing can be pulled here): Debian's PostgreSQL on the test's
# own bookworm base, started like the original from POSTGRES_* and the password file.
ARG BASE
FROM ${BASE}
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
