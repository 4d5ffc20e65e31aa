"""Download my data / delete my data (GDPR): `service.py` gathers and deletes, `page.py` is the
settings page that asks for a fresh sign-in and a confirmation first."""
