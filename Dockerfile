FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings but no secrets: local ones with a throwaway key (no key file is left in the image);
# the image itself defaults to the production settings (manage.py, ASGI, WSGI, Celery), which need the secrets.
RUN DJANGO_SETTINGS_MODULE=config.settings.local DJANGO_SECRET_KEY=collectstatic-only-not-a-secret \
    python manage.py collectstatic --noinput -v 0
ENV DJANGO_SETTINGS_MODULE=config.settings.production
EXPOSE 8000
