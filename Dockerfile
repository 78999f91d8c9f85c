# The gust image: the static binary that `make build` makes (CGO_ENABLED=0),
# in an empty image. No base image is pulled, so it builds without a
# registry. Build it with `make image` (or `make compose-up`).
FROM scratch
COPY bin/gust /gust
ENV GUST_DATA=/data GUST_LOG_FORMAT=json
VOLUME /data
ENTRYPOINT ["/gust"]
CMD ["up", "--listen", ":8080", "--nats-listen", "0.0.0.0:4222"]
