FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY orch ./orch
RUN pip install --no-cache-dir .
ENV ORCHESTRATOR_HOST=0.0.0.0 \
    ORCHESTRATOR_PORT=8005
EXPOSE 8005
USER nobody
ENTRYPOINT ["june-orchestrator"]
