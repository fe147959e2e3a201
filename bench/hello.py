"""The ceiling of this stack: a minimal Flask app under waitress (``python -m bench.hello``)."""

import sys

import waitress
from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello() -> str:
    return "hello"


if __name__ == "__main__":
    waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]))
