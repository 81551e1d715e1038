# Stand-in for redis:7 (nothing can be pulled here): Debian's redis-server on the test's own
# bookworm base, with the original's docker-entrypoint.sh contract and /data.
ARG BASE
FROM ${BASE}
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
