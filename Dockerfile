FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY orch ./orch
RUN pip install --no-cache-dir '.[postgres]' \
    && mkdir -p /data && chown nobody /data
# State lives in a volume so it survives the container; nobody can write it.
ENV ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=8005 \
    ORCH_DB=/data/orchestrator.db
VOLUME /data
EXPOSE 8005
USER nobody
# The image has no curl: the project's own client asks /health (public, no token).
# It exits 0 for healthy or degraded (a TODO service or gateway away is not this
# container's fault), 1 for unhealthy and 3 for no answer; Docker wants 0 or 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD june-orchestrator --url "http://127.0.0.1:${ORCHESTRATOR_PORT}" --timeout 5 health >/dev/null || exit 1
ENTRYPOINT ["june-orchestrator"]
CMD ["serve"]
