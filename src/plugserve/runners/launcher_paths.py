"""Where a runner finds its packages inside tritonserver (standard library only: it runs before numpy imports)."""

import os
import site
import sys


def use_launcher_site_packages():
    """Put the launching environment's site-packages first on sys.path.

    The python backend stub embeds the system Python, which ignores PYTHONPATH and sees only the
    system's paths. plugserve.server passes the venv's site-packages in PLUGSERVE_SITE_PACKAGES.
    An environment variable rather than a config.pbtxt parameter because numpy must import at
    module load, before `initialize` sees the config, and because the path belongs to the
    machine that runs the server, not the one that built the repository. Prepended, so the venv's
    numpy 1.x wins over a system numpy 2 (the stub's `as_numpy` gives empty arrays with numpy 2).
    Without the variable (e.g. an NGC tritonserver image with packages installed system-wide)
    nothing changes. `site.addsitedir` also runs the directories' .pth files.
    """
    before = list(sys.path)
    for entry in os.environ.get("PLUGSERVE_SITE_PACKAGES", "").split(os.pathsep):
        if entry:
            site.addsitedir(entry)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
