"""Stand-in for Colab's `google.colab` (see tests/standins/README.md)."""
import os


def _log(event: str) -> None:
    """One line per call, in the file named by COLAB_STANDIN_LOG."""
    if os.environ.get("COLAB_STANDIN_LOG"):
        with open(os.environ["COLAB_STANDIN_LOG"], "a") as f:
            f.write(event + "\n")
