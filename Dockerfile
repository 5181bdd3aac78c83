# One image for the engine, pioneer and the gateway; docker-compose.yml picks the module.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app:/app/generated
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY generated ./generated
COPY discovery_client ./discovery_client
COPY services ./services
RUN useradd --system --uid 10001 discovery
USER discovery
