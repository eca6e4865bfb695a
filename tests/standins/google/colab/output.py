"""Stand-in for `google.colab.output`."""
from google.colab import _log


def enable_custom_widget_manager():
    _log("output.enable_custom_widget_manager")


def disable_custom_widget_manager():
    _log("output.disable_custom_widget_manager")
