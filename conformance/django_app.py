"""A one-module Django project instrumented by django-prometheus.

Settings, URLs and views live here (DJANGO_SETTINGS_MODULE=django_app).
Routes: /items/ok/ answers 200 after 2-20 ms, /items/missing/ raises
Http404, /items/boom/ raises an unhandled exception (500); /metrics is
django-prometheus' export view, which reads the multiprocess directory
when PROMETHEUS_MULTIPROC_DIR is set.
"""

import os
import random
import time

from django.core.wsgi import get_wsgi_application
from django.http import Http404, HttpResponse
from django.urls import include, path

SECRET_KEY = "conformance"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS = ["django_prometheus"]
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
DATABASES = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    # The 500s are the point of /items/boom/: their tracebacks would
    # only flood the test's log.
    "loggers": {"django.request": {"handlers": ["null"], "propagate": False}},
}


def ok(request):
    time.sleep(random.uniform(0.002, 0.02))
    return HttpResponse("ok\n")


def missing(request):
    raise Http404("no such item")


def boom(request):
    raise RuntimeError("unhandled")


urlpatterns = [
    path("items/ok/", ok, name="ok"),
    path("items/missing/", missing, name="missing"),
    path("items/boom/", boom, name="boom"),
    path("", include("django_prometheus.urls")),
]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)
application = get_wsgi_application()
