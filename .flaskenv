FLASK_APP=app.py
