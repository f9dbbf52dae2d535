# Runlog under gunicorn with uvicorn workers (config/gunicorn.conf.py). Build: docker compose build; run: docker compose up.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

COPY . .
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input --verbosity 0

EXPOSE 8000
# Migrations run on every start; they are a no-op when the schema is current.
CMD ["sh", "-c", "python manage.py migrate --no-input && exec gunicorn --config config/gunicorn.conf.py --bind 0.0.0.0:8000"]
