# Relay: one image for the web app (gunicorn), the Celery worker and beat.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RELAY_VAR_DIR=/var/lib/relay
WORKDIR /app
RUN useradd --system --uid 1000 --home /app relay \
    && mkdir -p /var/lib/relay && chown relay /var/lib/relay
COPY pyproject.toml README.md ./
COPY config ./config
COPY brands ./brands
COPY projects ./projects
COPY participants ./participants
COPY distributions ./distributions
COPY credits ./credits
COPY optouts ./optouts
RUN pip install --upgrade pip && pip install .
COPY manage.py ./
COPY templates ./templates
COPY static ./static
# collectstatic needs settings that load: DEBUG off with throwaway build-time secrets.
RUN DEBUG=false SECRET_KEY=build-only RELAY_ENCRYPTION_KEYS=$(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
    python manage.py collectstatic --no-input
USER relay
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz/', timeout=4).status == 200 else 1)"
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
