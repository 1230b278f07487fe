"""A minimal Django project for the `ardiq.contrib.django` tests (tests/test_django.py)."""
