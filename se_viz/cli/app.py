"""``se-viz app``: the Streamlit app from an installed package."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import EXIT_FAILED, err, positive


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the Streamlit app (needs: pip install 'se_viz[app]')",
                       description="Start the se_viz Streamlit app, the same as 'streamlit run "
                                   "app.py' in a checkout, with the settings of the installed "
                                   "se_viz/app/config.toml.")
    p.add_argument("--port", type=positive, help="port to serve on (default: Streamlit's, 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; "
                        "0.0.0.0 serves every network the machine is on)")
    p.set_defaults(func=cmd_app)


APP_DIR = Path(__file__).resolve().parents[1] / "app"  # files only: cli never imports se_viz.app


def streamlit_flags(overrides: dict | None = None,
                    config: Path = APP_DIR / "config.toml") -> list[str]:
    """The app's config.toml (then ``overrides``, "section.key" -> value) as ``streamlit
    run`` flags ``--section.key=value``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the [app] extra brings tomli
        import tomli as tomllib
    with open(config, "rb") as f:
        settings = {f"{section}.{key}": value for section, values in tomllib.load(f).items()
                    for key, value in values.items()}
    settings.update(overrides or {})
    return [f"--{name}={str(v).lower() if isinstance(v, bool) else v}"
            for name, v in settings.items()]


def app_command(port: int | None = None, address: str = "127.0.0.1") -> list[str]:
    """``python -m streamlit run <installed se_viz/app/script.py> --flags...``."""
    overrides = {"server.headless": True, "server.address": address}
    if port is not None:
        overrides["server.port"] = port
    return [sys.executable, "-m", "streamlit", "run", str(APP_DIR / "script.py"),
            *streamlit_flags(overrides)]


def cmd_app(args: argparse.Namespace) -> int:
    """``app``: become the Streamlit server of the installed app (POSIX: exec, so signals
    and the exit status are Streamlit's; elsewhere: a child process)."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        err("the app needs Streamlit: pip install 'se_viz[app]'")
        return EXIT_FAILED
    command = app_command(args.port, args.address)
    if os.name == "posix":
        sys.stdout.flush()
        os.execv(sys.executable, command)
    return subprocess.call(command)
