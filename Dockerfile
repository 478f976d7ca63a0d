# The web image: the app under gunicorn. docker-compose.yml runs migrations before it starts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY starter ./starter
RUN pip install .

COPY app.py seed.py gunicorn.conf.py .flaskenv ./
COPY migrations ./migrations

RUN useradd --create-home app && mkdir -p instance && chown app instance
USER app
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
