"""Whether a live notebook frontend can show widgets (else figures fall back to static matplotlib)."""
from __future__ import annotations

import os


def has_widget_frontend() -> bool:
    """True inside a live Jupyter/Colab kernel with a frontend; False in plain Python and headless runs.

    The headless notebook runner sets ``TOOLKIT_HEADLESS=1``; widgets then draw a static figure instead.
    """
    if os.environ.get("TOOLKIT_HEADLESS", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ in ("ZMQInteractiveShell", "Shell")
