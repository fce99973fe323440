"""As root, the embedded PostgreSQL runs as ``nobody`` (PostgreSQL refuses root): whether it can
here, and if not, the one message that says why and what to do.

Standard library only, and runnable as a script: ``./dev run`` asks it with the system Python
before it builds the venv, so a clone ``nobody`` cannot enter (one under ``/root``) is refused at
once, in the same words :mod:`app.ops.embedded` would use after the install.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
from pathlib import Path

#: Who runs PostgreSQL when we are root (PostgreSQL refuses root; this user exists everywhere).
UNPRIVILEGED_USER = "nobody"


def unprivileged_user() -> tuple[pwd.struct_passwd | None, str | None]:
    """``(the user PostgreSQL runs as, None)``, or ``(None, why there is none)``."""
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER), None
    except KeyError:
        return None, (f"running as root, the embedded PostgreSQL needs the user "
                      f"'{UNPRIVILEGED_USER}' to run as, and this system has none; run as a "
                      "normal user or set DATABASE_URL")


def _can_enter(path: Path, user: pwd.struct_passwd, bits: int) -> bool:
    """Whether ``user`` has ``bits`` (e.g. x, or r|x) on ``path``, by its mode bits."""
    st = path.stat()
    if st.st_uid == user.pw_uid:
        need = bits << 6
    elif st.st_gid == user.pw_gid:
        need = bits << 3
    else:
        need = bits
    return st.st_mode & need == need


def _first_blocked(path: Path, user: pwd.struct_passwd, opened: Path) -> Path | None:
    """The first folder from ``/`` down to ``path`` that ``user`` cannot enter, or None.
    ``opened`` does not count: jobq makes its own data folder enterable itself."""
    for folder in reversed([path, *path.parents]):
        if folder != opened and folder.exists() and not _can_enter(folder, user, stat.S_IXOTH):
            return folder
    return None


def problem(user: pwd.struct_passwd, home: Path, binaries: Path) -> str | None:
    """Why ``user`` cannot run PostgreSQL with its data in ``home`` (``JOBQ_HOME``) and its
    binaries in ``binaries``, or None. Folders that do not exist yet are not judged."""
    for needed, what in ((home, "the data folder"), (binaries, "PostgreSQL's binaries")):
        blocked = _first_blocked(needed, user, opened=home)
        if blocked is not None:
            mode = stat.filemode(blocked.stat().st_mode)
            return (
                f"running as root, the embedded PostgreSQL runs as the unprivileged user "
                f"'{user.pw_name}' (PostgreSQL refuses root), and '{user.pw_name}' cannot enter "
                f"{blocked} ({mode}) on the way to {what} ({needed}). jobq changes no folder "
                f"outside its own. Either run as a normal user, or keep the project (and its "
                f".venv) and JOBQ_HOME in folders others may enter (e.g. /srv/jobq), or "
                f"`chmod o+x {blocked}` yourself, or set DATABASE_URL to a PostgreSQL of your own"
            )
    return None


def planned_binaries(venv: Path) -> Path:
    """Where ``pgserver`` puts PostgreSQL's binaries in ``venv``, built by this Python."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages" / "pgserver" / "pginstall" / "bin"


def check_before_install(jobq_home: str, venv: Path) -> str | None:
    """What ``jobq run`` would refuse with, known before the venv exists: None when not root.
    ``jobq_home`` is $JOBQ_HOME (empty: unset); ``./dev`` asks only when DATABASE_URL is unset
    (with a PostgreSQL of one's own, nothing embedded starts)."""
    if os.geteuid() != 0:
        return None
    user, missing = unprivileged_user()
    if user is None:
        return missing
    # As app.core.settings reads it: relative to the folder jobq runs in.
    home = Path(jobq_home or ".jobq").expanduser().absolute()
    return problem(user, home, planned_binaries(venv.absolute()))


if __name__ == "__main__":  # ./dev run, before it creates .venv:
    # python3 app/ops/as_root.py .venv "$JOBQ_HOME" (the environment is app.core.settings's to
    # read, and this runs before there is an app to import)
    refused = check_before_install(sys.argv[2] if len(sys.argv) > 2 else "",
                                   Path(sys.argv[1] if len(sys.argv) > 1 else ".venv"))
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        sys.exit(1)
