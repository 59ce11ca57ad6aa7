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
ENTRYPOINT ["june-orchestrator"]
CMD ["serve"]
