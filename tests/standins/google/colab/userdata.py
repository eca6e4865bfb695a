"""Stand-in for `google.colab.userdata`: secrets from a JSON file."""
import json
import os

from google.colab import _log


class SecretNotFoundError(Exception):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


class NotebookAccessError(Exception):
    pass


def get(key):
    _log(f"userdata.get {key}")
    path = os.environ.get("COLAB_STANDIN_SECRETS")
    secrets = json.load(open(path)) if path and os.path.exists(path) else {}
    if key not in secrets:
        raise SecretNotFoundError(key)
    return secrets[key]
