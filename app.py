"""The WSGI entry point: ``flask --app app run`` and ``gunicorn app:app`` both find ``app`` here."""

from seed import seed_command
from starter import create_app

app = create_app()
app.cli.add_command(seed_command)
