# Relay: one image for the web app (gunicorn), the Celery worker and beat.
# scripts/check_image.py (run by `make test` and CI) builds this image's file set without a
# Docker engine, installs it, runs collectstatic, `check --deploy` and the server: keep the two
# in step when an instruction here changes.
FROM python:3.11-slim AS base
# PYTHONPATH: every process (gunicorn, celery, manage.py) imports the apps from /app, the tree
# that also holds their templates, static files and data, never from the copies in
# site-packages (celery's entry point would otherwise load those, without their data files).
# RELAY_STATIC_ROOT: collected static files stay in the image; /var/lib/relay is a volume that
# would keep an older build's files (and manifest) after an upgrade.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app \
    RELAY_VAR_DIR=/var/lib/relay RELAY_STATIC_ROOT=/app/staticfiles
WORKDIR /app
RUN useradd --system --uid 1000 --home /app relay \
    && mkdir -p /var/lib/relay && chown relay /var/lib/relay
# The dependencies in a layer of their own: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    | xargs pip install
# The app: the whole build context, which .dockerignore keeps to what runs (every app folder,
# config, templates, static, manage.py), so that a new app needs no line here.
COPY . ./
RUN pip install --no-deps .
# collectstatic needs settings that load: DEBUG off with throwaway build-time secrets.
RUN DEBUG=false SECRET_KEY=build-only RELAY_ENCRYPTION_KEYS=$(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
    python manage.py collectstatic --no-input
USER relay
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz/', timeout=4).status == 200 else 1)"
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
