import gc
import os

import django
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # what get_wsgi_application does, with our handler

from config.handlers import RelayWSGIHandler  # noqa: E402 - needs the apps loaded

application = RelayWSGIHandler()

# Load every view now (the URLconf imports them), then move what is loaded out of the garbage
# collector's sight: modules, classes and settings live as long as the process, and without
# this every full collection walks them all again (about 160,000 objects).
get_resolver().url_patterns  # noqa: B018
gc.freeze()
