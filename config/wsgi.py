import os

from django.core.wsgi import get_wsgi_application

# Fail closed: without an explicit choice, the production settings (which refuse to start without secrets).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
application = get_wsgi_application()
